// A parameter form built from a params.ts spec: one input per parameter, checked as it is typed
// (one message per bad value), written back to the URL so the page state is a shareable link.
import { formatField, parseField, ParamError, type ExperimentName } from '../params.ts';
import { h } from './dom.ts';

interface FieldSpec {
  kind: 'int' | 'num' | 'ints' | 'name' | 'bool';
  min?: number;
  max?: number;
  label: string;
  help?: string;
}

export class ParamForm<T extends object> {
  readonly el: HTMLFormElement;
  private readonly inputs = new Map<string, HTMLInputElement>();
  private readonly errorsEl = h('ul', { class: 'param-errors', role: 'alert' });

  constructor(
    readonly group: ExperimentName,
    spec: Record<keyof T, FieldSpec>,
    values: T,
    private readonly onChange: () => void,
  ) {
    const fields: HTMLElement[] = [];
    for (const [key, s] of Object.entries(spec) as [string, FieldSpec][]) {
      const v = (values as Record<string, unknown>)[key];
      const input =
        s.kind === 'bool'
          ? h('input', { type: 'checkbox', name: key, id: `${group}.${key}`, checked: !!v })
          : h('input', { type: 'text', name: key, id: `${group}.${key}`, value: formatField(v), inputmode: s.kind === 'name' ? undefined : 'decimal', spellcheck: 'false', autocomplete: 'off' });
      input.addEventListener('change', () => this.changed());
      this.inputs.set(key, input);
      const range = s.min !== undefined && s.max !== undefined && s.kind !== 'num' ? ` (${s.min}–${s.max})` : '';
      fields.push(h('label', { class: 'field', for: `${group}.${key}`, title: s.help ?? '' }, h('span', {}, `${s.label}${range}`), input));
    }
    this.el = h('form', { class: 'params', onsubmit: (e: Event) => e.preventDefault() }, h('div', { class: 'fields' }, ...fields), this.errorsEl);
  }

  private changed(): void {
    this.read();
    this.onChange();
  }

  /** The form's values, or the messages of the bad ones (also shown under the form). */
  read(extraCheck?: (v: T) => string[]): { values: T | null; errors: string[] } {
    const out: Record<string, unknown> = {};
    const errors: string[] = [];
    for (const [key, input] of this.inputs) {
      try {
        out[key] = input.type === 'checkbox' ? input.checked : parseField(this.group, key, input.value);
        input.removeAttribute('aria-invalid');
      } catch (e) {
        if (!(e instanceof ParamError)) throw e;
        errors.push(e.message);
        input.setAttribute('aria-invalid', 'true');
      }
    }
    if (!errors.length && extraCheck) errors.push(...extraCheck(out as T));
    this.errorsEl.replaceChildren(...errors.map((m) => h('li', {}, `error: ${m}`)));
    return { values: errors.length ? null : (out as T), errors };
  }

  set(values: T): void {
    for (const [key, input] of this.inputs) {
      const v = (values as Record<string, unknown>)[key];
      if (input.type === 'checkbox') input.checked = !!v;
      else input.value = formatField(v);
    }
  }

  disable(on: boolean): void {
    for (const i of this.inputs.values()) i.disabled = on;
  }
}
