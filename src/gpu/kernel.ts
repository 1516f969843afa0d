// One declaration per compute kernel (in the spirit of ONNX Runtime WebGPU's Program/CacheHint and
// tfjs-backend-webgpu's shaderKey): a kernel states its storage bindings (name, element type,
// access), its uniform struct (name, type), a `key(params)` naming every code-generation choice, and
// a `body(params)` with the WGSL after the bindings. The binding header and uniform struct are
// generated from the declaration, and a program (WGSL + layout) is built only when its key is new:
// every later dispatch with the same key reuses the same program object, which the runtime uses as
// the identity of its pipeline and bind groups.
//
// Generated header (group 0): storage bindings 0..n-1 in declaration order as
//   @group(0) @binding(i) var<storage, ACCESS> NAME: array<TYPE>;
// then, when the kernel has uniforms, `struct U { ... }` at binding n as `var<uniform> u: U`.
// The body holds everything else, including the `@compute @workgroup_size(...) fn main` entry.

import { GpuError, type DType, type Gpu, type Tensor, type Workgroups } from './runtime.ts';

export type Access = 'read' | 'read_write';
export type UniformType = 'u32' | 'i32' | 'f32';

/** A storage binding as declared: [name, WGSL element type, access, accepted tensor dtypes?]. */
export type BindingDecl = readonly [name: string, type: string, access: Access, dtypes?: readonly DType[]];

/** Uniform struct members in order: name → type (all 4-byte scalars). */
export type UniformDecl = Readonly<Record<string, UniformType>>;

export interface Binding {
  readonly name: string;
  readonly type: string;
  readonly access: Access;
  /** Tensor dtypes the binding accepts (default: the element type's scalar type). */
  readonly dtypes: readonly DType[];
}

export interface UniformField {
  readonly name: string;
  readonly type: UniformType;
  /** Byte offset in the struct. */
  readonly offset: number;
}

/** One generated variant of a kernel: what the runtime compiles, binds and dispatches. */
export interface KernelProgram {
  /** The kernel's name. */
  readonly kernel: string;
  /** The variant's key (empty for kernels without code-generation parameters). */
  readonly key: string;
  /** kernel + key: appears in every error message, GPU object label and profile row. */
  readonly name: string;
  readonly code: string;
  readonly bindings: readonly Binding[];
  readonly uniforms: readonly UniformField[];
  /** Size of the uniform buffer range (0 without uniforms). */
  readonly uniformBytes: number;
}

/** Tensors by binding name (an undefined entry counts as absent: conditional spreads stay simple). */
export type KernelBuffers = Readonly<Record<string, Tensor | undefined>>;
/** Uniform values by member name. */
export type UniformValues<U extends UniformDecl> = { readonly [K in keyof U]: number };
/** The uniforms argument of Kernel.run: required when the kernel declares uniforms. */
type UniformArg<U extends UniformDecl> = {} extends U ? [] : [uniforms: UniformValues<U>];

interface DefBase<P, U extends UniformDecl> {
  /** Unique across the process: registry key and program-name prefix. */
  name: string;
  bindings: readonly BindingDecl[] | ((p: P) => readonly BindingDecl[]);
  uniforms?: U;
  /** WGSL `enable` extensions (e.g. 'subgroups'). */
  enable?: (p: P) => readonly string[];
  /** Everything after the generated header: helper functions, constants, the entry point. */
  body: (p: P) => string;
}

interface DefWithParams<P, U extends UniformDecl> extends DefBase<P, U> {
  /** Names every code-generation choice in params; distinct WGSL must never share a key. */
  key: (p: P) => string;
  /** The parameter space (or a representative set), for the identity tests. */
  space: () => readonly P[];
}

interface DefNoParams<U extends UniformDecl> extends DefBase<Record<string, never>, U> {
  key?: undefined;
  space?: undefined;
}

export type KernelDef<P, U extends UniformDecl> = DefWithParams<P, U> | DefNoParams<U>;

const SCALAR_DTYPE: Record<string, DType> = { f32: 'f32', u32: 'u32', i32: 'i32' };

/** The scalar dtype of a WGSL element type: f32, vec4<f32>, vec2<u32>, … */
function elementDType(kernel: string, name: string, type: string): DType {
  const m = /^(?:vec[234]<(\w+)>|(\w+))$/.exec(type.replace(/\s+/g, ''));
  const scalar = m ? SCALAR_DTYPE[m[1] ?? m[2]] : undefined;
  if (!scalar) throw new GpuError(`kernel ${kernel}: binding '${name}' has element type '${type}'; give its dtypes explicitly`);
  return scalar;
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]*$/;

let generations = 0;
const registry = new Map<string, Kernel<never, UniformDecl>>();

/** WGSL generations (body() calls) so far over all kernels: one per distinct (kernel, key). */
export function codegenCount(): number {
  return generations;
}

/** Every kernel defined so far (the identity tests walk them). */
export function registeredKernels(): readonly Kernel<never, UniformDecl>[] {
  return [...registry.values()];
}

export class Kernel<P, U extends UniformDecl> {
  readonly name: string;
  private readonly def: DefWithParams<P, U>;
  private readonly hasParams: boolean;
  private readonly programs = new Map<string, KernelProgram>();
  private readonly uniformFields: readonly UniformField[];
  private readonly uniformBytes: number;
  private generatedCount = 0;

  constructor(def: KernelDef<P, U>) {
    if (!IDENT.test(def.name)) throw new GpuError(`defineKernel: bad kernel name '${def.name}'`);
    this.name = def.name;
    this.hasParams = def.key !== undefined;
    // Without parameters the only key is '' and the space is one empty parameter object.
    this.def = (def.key ? def : { ...def, key: () => '', space: () => [{}] }) as DefWithParams<P, U>;
    const entries = Object.entries(def.uniforms ?? {});
    this.uniformFields = entries.map(([name, type], i) => {
      if (!IDENT.test(name)) throw new GpuError(`kernel ${def.name}: bad uniform name '${name}'`);
      if (type !== 'u32' && type !== 'i32' && type !== 'f32') throw new GpuError(`kernel ${def.name}: uniform '${name}' has unsupported type '${String(type)}'`);
      return { name, type, offset: 4 * i };
    });
    // 4-byte scalars at alignment 4; the range is rounded up to 16 bytes.
    this.uniformBytes = entries.length ? Math.max(16, Math.ceil((entries.length * 4) / 16) * 16) : 0;
  }

  /** Whether the kernel has code-generation parameters (else its only key is ''). */
  get parametric(): boolean {
    return this.hasParams;
  }

  /** The declared parameter space ([{}] for kernels without parameters). */
  space(): readonly P[] {
    return this.def.space();
  }

  key(p: P): string {
    return this.def.key(p);
  }

  /** WGSL generations of this kernel so far (one per distinct key). */
  get generated(): number {
    return this.generatedCount;
  }

  /** The program for params: built on the first use of its key, the same object afterwards. */
  program(p: P): KernelProgram {
    const key = this.key(p);
    let prog = this.programs.get(key);
    if (!prog) {
      prog = this.build(p, key);
      this.programs.set(key, prog);
    }
    return prog;
  }

  /** The full WGSL for params, generated afresh (not cached, not counted): for tests and debugging. */
  source(p: P): string {
    return this.assemble(p, this.bindingsOf(p));
  }

  /** Records one dispatch: buffers by binding name, uniforms by member name (checked by the runtime). */
  run(gpu: Gpu, p: P, buffers: KernelBuffers, workgroups: Workgroups, ...uniforms: UniformArg<U>): void {
    gpu.run(this.program(p), buffers, workgroups, uniforms[0]);
  }

  private bindingsOf(p: P): Binding[] {
    const decls = typeof this.def.bindings === 'function' ? this.def.bindings(p) : this.def.bindings;
    const seen = new Set<string>();
    return decls.map(([name, type, access, dtypes]) => {
      if (!IDENT.test(name)) throw new GpuError(`kernel ${this.name}: bad binding name '${name}'`);
      if (seen.has(name) || name === 'u') throw new GpuError(`kernel ${this.name}: binding name '${name}' is used twice`);
      seen.add(name);
      return { name, type, access, dtypes: dtypes ?? [elementDType(this.name, name, type)] };
    });
  }

  private assemble(p: P, bindings: readonly Binding[]): string {
    const lines: string[] = [];
    for (const e of this.def.enable?.(p) ?? []) lines.push(`enable ${e};`);
    bindings.forEach((b, i) => lines.push(`@group(0) @binding(${i}) var<storage, ${b.access}> ${b.name}: array<${b.type}>;`));
    if (this.uniformFields.length) {
      lines.push(`struct U { ${this.uniformFields.map((f) => `${f.name}: ${f.type}`).join(', ')} }`);
      lines.push(`@group(0) @binding(${bindings.length}) var<uniform> u: U;`);
    }
    return `${lines.join('\n')}\n${this.def.body(p)}`;
  }

  private build(p: P, key: string): KernelProgram {
    const bindings = this.bindingsOf(p);
    const code = this.assemble(p, bindings);
    generations++;
    this.generatedCount++;
    return {
      kernel: this.name,
      key,
      name: key ? `${this.name}_${key}` : this.name,
      code,
      bindings,
      uniforms: this.uniformFields,
      uniformBytes: this.uniformBytes,
    };
  }
}

/** Declares a kernel (see the file comment). Names are unique: a second kernel of a name is an error. */
export function defineKernel<P, const U extends UniformDecl = Record<string, never>>(def: DefWithParams<P, U>): Kernel<P, U>;
export function defineKernel<const U extends UniformDecl = Record<string, never>>(def: DefNoParams<U>): Kernel<Record<string, never>, U>;
export function defineKernel<P, U extends UniformDecl>(def: KernelDef<P, U>): Kernel<P, U> {
  if (registry.has(def.name)) throw new GpuError(`defineKernel: a kernel named '${def.name}' already exists`);
  const k = new Kernel(def);
  registry.set(def.name, k as unknown as Kernel<never, UniformDecl>);
  return k;
}

/** Cartesian product of per-parameter value lists, for `space`. */
export function product<T extends Record<string, readonly unknown[]>>(axes: T): { [K in keyof T]: T[K][number] }[] {
  let out: Record<string, unknown>[] = [{}];
  for (const [k, values] of Object.entries(axes)) out = out.flatMap((o) => values.map((v) => ({ ...o, [k]: v })));
  return out as { [K in keyof T]: T[K][number] }[];
}
