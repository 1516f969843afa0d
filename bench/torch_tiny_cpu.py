#!/usr/bin/python3
"""Copied from ../shared/bench/torch_tiny_cpu.py (the project's shared PyTorch CPU reference); added here:
LABEL_FRAC (train): loss on the last LABEL_FRAC of each row only, with the LM head run on those rows alone,
as the project's trainer does for completion-only losses (default 1 = every token, the original).

Qwen2-style decoder-only transformer in plain torch (RMSNorm, RoPE, GQA, SwiGLU, tied embeddings,
q/k/v bias as in Qwen2). Benchmarks: training tokens/s (full + LoRA r=8 on q,k,v,o,gate,up,down) and
KV-cache batched sampling (prefill / decode tok/s).
Usage: tiny_qwen.py train|sample a|b [reps]"""
import math, os, sys, time, statistics
import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    'a': dict(vocab=2048, hidden=128, layers=4, heads=4, kv_heads=2, inter=384),
    'b': dict(vocab=4096, hidden=256, layers=6, heads=8, kv_heads=2, inter=768),
    't': dict(vocab=2932, hidden=64, layers=4, heads=4, kv_heads=2, inter=192),  # the project's tiny-qwen-a shape
}

class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__(); self.weight = nn.Parameter(torch.ones(d)); self.eps = eps
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight

class LoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, r=8, alpha=16):
        super().__init__()
        self.base = base
        self.A = nn.Parameter(torch.randn(r, base.in_features) / math.sqrt(base.in_features))
        self.B = nn.Parameter(torch.zeros(base.out_features, r))
        self.scale = alpha / r
    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.A), self.B) * self.scale

def rope_tables(hd, max_len, theta=10000.0):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    t = torch.arange(max_len).float()
    fr = torch.outer(t, inv)
    emb = torch.cat([fr, fr], -1)
    return emb.cos(), emb.sin()

def rotate_half(x):
    x1, x2 = x.chunk(2, -1)
    return torch.cat([-x2, x1], -1)

def apply_rope(x, cos, sin):  # x: B,H,T,hd ; cos/sin: T,hd
    return x * cos + rotate_half(x) * sin

class Attention(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.h, s.kvh = c['heads'], c['kv_heads']; s.hd = c['hidden'] // c['heads']; d = c['hidden']
        s.q_proj = nn.Linear(d, s.h * s.hd, bias=True)
        s.k_proj = nn.Linear(d, s.kvh * s.hd, bias=True)
        s.v_proj = nn.Linear(d, s.kvh * s.hd, bias=True)
        s.o_proj = nn.Linear(s.h * s.hd, d, bias=False)
    def forward(s, x, cos, sin, mask=None, cache=None, pos=0):
        B, T, _ = x.shape
        q = s.q_proj(x).view(B, T, s.h, s.hd).transpose(1, 2)
        k = s.k_proj(x).view(B, T, s.kvh, s.hd).transpose(1, 2)
        v = s.v_proj(x).view(B, T, s.kvh, s.hd).transpose(1, 2)
        q = apply_rope(q, cos[pos:pos + T], sin[pos:pos + T]); k = apply_rope(k, cos[pos:pos + T], sin[pos:pos + T])
        if cache is not None:  # cache: (K, V) each B,kvh,maxlen,hd
            cache[0][:, :, pos:pos + T] = k; cache[1][:, :, pos:pos + T] = v
            k = cache[0][:, :, :pos + T]; v = cache[1][:, :, :pos + T]
        g = s.h // s.kvh
        L = k.shape[2]
        # grouped-query attention without materialising repeated K/V: q -> B,kvh,g*T,hd
        qg = q.reshape(B, s.kvh, g * T, s.hd)
        att = torch.matmul(qg, k.transpose(-1, -2)) * (1.0 / math.sqrt(s.hd))  # B,kvh,g*T,L
        if mask is not None:
            att = att.view(B, s.kvh, g, T, L) + mask[pos:pos + T, :L]
            att = att.view(B, s.kvh, g * T, L)
        att = torch.softmax(att, -1)
        y = torch.matmul(att, v).view(B, s.h, T, s.hd).transpose(1, 2).reshape(B, T, s.h * s.hd)
        return s.o_proj(y)

class MLP(nn.Module):
    def __init__(s, c):
        super().__init__(); d, i = c['hidden'], c['inter']
        s.gate_proj = nn.Linear(d, i, bias=False); s.up_proj = nn.Linear(d, i, bias=False); s.down_proj = nn.Linear(i, d, bias=False)
    def forward(s, x):
        return s.down_proj(F.silu(s.gate_proj(x)) * s.up_proj(x))

class Block(nn.Module):
    def __init__(s, c):
        super().__init__()
        s.input_layernorm = RMSNorm(c['hidden']); s.self_attn = Attention(c)
        s.post_attention_layernorm = RMSNorm(c['hidden']); s.mlp = MLP(c)
    def forward(s, x, cos, sin, mask=None, cache=None, pos=0):
        x = x + s.self_attn(s.input_layernorm(x), cos, sin, mask, cache, pos)
        return x + s.mlp(s.post_attention_layernorm(x))

class TinyQwen(nn.Module):
    def __init__(s, c, max_len=256):
        super().__init__(); s.c = c
        s.embed_tokens = nn.Embedding(c['vocab'], c['hidden'])
        s.layers = nn.ModuleList([Block(c) for _ in range(c['layers'])])
        s.norm = RMSNorm(c['hidden'])
        cos, sin = rope_tables(c['hidden'] // c['heads'], max_len)
        s.register_buffer('cos', cos, persistent=False); s.register_buffer('sin', sin, persistent=False)
        m = torch.full((max_len, max_len), float('-inf')).triu(1)
        s.register_buffer('mask', m, persistent=False)
        nn.init.normal_(s.embed_tokens.weight, std=0.02)
    def forward(s, ids, caches=None, pos=0, last_only=False, first_label=0):
        x = s.embed_tokens(ids)
        T = ids.shape[1]
        mask = s.mask if T > 1 else None
        for i, l in enumerate(s.layers):
            x = l(x, s.cos, s.sin, mask, None if caches is None else caches[i], pos)
        x = s.norm(x)
        if last_only: x = x[:, -1:]
        elif first_label: x = x[:, first_label:]  # completion-only: LM head on the labelled rows
        return F.linear(x, s.embed_tokens.weight)  # tied lm head

def add_lora(model, r=8):
    for p in model.parameters(): p.requires_grad_(False)
    for blk in model.layers:
        for name in ['q_proj', 'k_proj', 'v_proj', 'o_proj']:
            setattr(blk.self_attn, name, LoRALinear(getattr(blk.self_attn, name), r))
        for name in ['gate_proj', 'up_proj', 'down_proj']:
            setattr(blk.mlp, name, LoRALinear(getattr(blk.mlp, name), r))

def counts(c, T):
    d, L, V, i = c['hidden'], c['layers'], c['vocab'], c['inter']
    hd = d // c['heads']; kvd = c['kv_heads'] * hd
    per_layer_mm = d * d + 2 * d * kvd + d * d + 3 * d * i  # q,k,v,o,gate,up,down weights
    n_mm = L * per_layer_mm + V * d                       # + tied lm head matmul
    attn_fwd = 2 * 2 * L * T * d                           # QK^T and AV, full (unmasked) TxT, per token
    return n_mm, attn_fwd

def train_bench(cfg, reps, lora):
    c = CONFIGS[cfg]; T, B = int(os.environ.get('T', 128)), int(os.environ.get('B', 32))
    torch.manual_seed(0)
    model = TinyQwen(c)
    total_params = sum(p.numel() for p in model.parameters())
    if lora: add_lora(model, 8)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in trainable)
    opt = torch.optim.AdamW(trainable, lr=1e-3, weight_decay=0.01)
    data = torch.randint(0, c['vocab'], (B, T + 1))
    first = T - max(1, round(T * float(os.environ.get('LABEL_FRAC', '1'))))
    def step():
        logits = model(data[:, :-1], first_label=first)
        loss = F.cross_entropy(logits.reshape(-1, c['vocab']), data[:, 1 + first:].reshape(-1))
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return loss.item()
    step()  # warm-up
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); loss = step(); ts.append(time.perf_counter() - t0)
    n_mm, attn_fwd = counts(c, T)
    lora_mm = n_train if lora else 0
    f_6n = 6 * n_mm + 3 * attn_fwd                     # brief's formula: 6*params + attention (fwd+bwd)
    f_lora = 4 * n_mm + 6 * lora_mm + 3 * attn_fwd if lora else f_6n  # no weight grads for frozen base
    tok = B * T
    tps_best, tps_med = tok / min(ts), tok / statistics.median(ts)
    print(f'train cfg={cfg} mode={"lora" if lora else "full"} params={total_params} trainable={n_train} matmul_params={n_mm} '
          f'step_s_min={min(ts):.3f} step_s_med={statistics.median(ts):.3f} tok/s_best={tps_best:.0f} tok/s_med={tps_med:.0f} '
          f'flop/tok(6N+attn)={f_6n/1e6:.2f}M GFLOPs_best(6N)={f_6n*tps_best/1e9:.2f} GFLOPs_med(6N)={f_6n*tps_med/1e9:.2f}'
          + (f' flop/tok(4N+6Nlora+attn)={f_lora/1e6:.2f}M GFLOPs_best(lora-acct)={f_lora*tps_best/1e9:.2f}' if lora else '')
          + f' loss={loss:.3f} reps={reps}', flush=True)

@torch.no_grad()
def sample_bench(cfg, reps, batch, prompt=64, gen=48):
    c = CONFIGS[cfg]
    torch.manual_seed(0)
    model = TinyQwen(c).eval()
    hd = c['hidden'] // c['heads']
    ids = torch.randint(0, c['vocab'], (batch, prompt))
    def run():
        caches = [(torch.empty(batch, c['kv_heads'], prompt + gen, hd), torch.empty(batch, c['kv_heads'], prompt + gen, hd)) for _ in range(c['layers'])]
        t0 = time.perf_counter()
        logits = model(ids, caches, 0, last_only=True)[:, -1]
        tok = torch.multinomial(torch.softmax(logits / 1.0, -1), 1)       # new token 1
        t1 = time.perf_counter()
        out = [tok]
        for i in range(gen - 1):                                          # new tokens 2..gen
            logits = model(tok, caches, prompt + i)[:, -1]
            tok = torch.multinomial(torch.softmax(logits / 1.0, -1), 1)
            out.append(tok)
        t2 = time.perf_counter()
        return t1 - t0, t2 - t1
    run()  # warm-up
    pre, dec = [], []
    for _ in range(reps):
        a, b = run(); pre.append(a); dec.append(b)
    n_mm, _ = counts(c, 1)
    pf = [batch * prompt / x for x in pre]; df = [batch * (gen - 1) / x for x in dec]
    tot = [batch * gen / (a + b) for a, b in zip(pre, dec)]
    print(f'sample cfg={cfg} batch={batch} prompt={prompt} gen={gen} prefill_s_min={min(pre):.3f} prefill_tok/s_best={max(pf):.0f} prefill_tok/s_med={statistics.median(pf):.0f} '
          f'decode_s_min={min(dec):.3f} decode_tok/s_best={max(df):.0f} decode_tok/s_med={statistics.median(df):.0f} '
          f'end2end_gen_tok/s_best={max(tot):.0f} end2end_gen_tok/s_med={statistics.median(tot):.0f} '
          f'decode_GFLOPs_best(2N)={2*n_mm*max(df)/1e9:.2f} prefill_GFLOPs_best(2N)={2*n_mm*max(pf)/1e9:.2f} reps={reps}', flush=True)

if __name__ == '__main__':
    what, cfg = sys.argv[1], sys.argv[2]
    reps = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(int(os.environ.get('BENCH_THREADS', '2')))
    print(f'# torch {torch.__version__} threads={torch.get_num_threads()} interop={torch.get_num_interop_threads()} '
          f'OMP_NUM_THREADS={os.environ.get("OMP_NUM_THREADS")} OMP_WAIT_POLICY={os.environ.get("OMP_WAIT_POLICY")} OPENBLAS_NUM_THREADS={os.environ.get("OPENBLAS_NUM_THREADS")} LD_LIBRARY_PATH={os.environ.get("LD_LIBRARY_PATH")} '
          f'sdpa_available={hasattr(F, "scaled_dot_product_attention")}', flush=True)
    if what == 'train':
        for m in os.environ.get('TRAIN_MODES', 'full,lora').split(','): train_bench(cfg, reps, lora=(m == 'lora'))
    else:
        for b in os.environ.get('SAMPLE_BATCHES', '64,256').split(','): sample_bench(cfg, reps, int(b))
