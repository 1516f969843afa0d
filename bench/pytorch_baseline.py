"""PyTorch + transformers + PEFT baseline for the WebGPU figures of bench/model.ts and bench/train.ts.

Not part of the project's pipeline (which needs no Python): run it on the same machine as
`npm run bench` to compare the two on one card. It builds the same random models (Qwen2.5-0.5B-shaped
Qwen2, and the embedded tiny-qwen config), the same batches and the same step contents:
  - prefill: one forward over B x T tokens filling a KV cache;
  - decode+sample: one-token steps with the KV cache, temperature-1 sampling over the full vocabulary;
  - training step: forward, causal-LM cross-entropy over every token, backward, grad-norm clip 1.0,
    AdamW; full finetuning, and LoRA r8 / alpha 8 on q,k,v,o,gate,up,down through PEFT.
Each in float32 with TF32 off (the WebGPU path computes in float32) and in bfloat16 autocast (how the
paper's Unsloth students train). Writes one JSON object per figure, one per line, to stdout.

usage: python3 bench/pytorch_baseline.py [--quick] [--only model,train] [--precision fp32,bf16] > results.jsonl
"""
import argparse
import json
import sys
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM


def qwen05_config(layers):
    return Qwen2Config(vocab_size=151936, hidden_size=896, num_attention_heads=14, num_key_value_heads=2,
                       intermediate_size=4864, num_hidden_layers=layers, tie_word_embeddings=True,
                       max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                       use_sliding_window=False)


def tiny_config():
    return Qwen2Config(vocab_size=2335, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                       intermediate_size=192, num_hidden_layers=4, tie_word_embeddings=True,
                       max_position_embeddings=512, rms_norm_eps=1e-6, rope_theta=10000.0,
                       use_sliding_window=False)


def sync():
    torch.cuda.synchronize()


def emit(**row):
    print(json.dumps(row), flush=True)


def make_model(cfg, precision):
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(cfg).cuda()
    if precision == 'bf16':
        model = model.to(torch.bfloat16)
    return model.eval()


@torch.no_grad()
def bench_model(layers, batches, steps, precision):
    cfg = qwen05_config(layers)
    model = make_model(cfg, precision)
    for B in batches:
        T = 64 if B == 1 else 32
        ids = (torch.arange(B * T, device='cuda') * 7919 % cfg.vocab_size).view(B, T)
        for _ in range(2):  # warm-up
            out = model(input_ids=ids, use_cache=True)
        sync()
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        sync()
        prefill_s = time.perf_counter() - t0
        cache = out.past_key_values
        tok = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
        # one untimed step, then the timed ones
        out = model(input_ids=tok, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        tok = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=tok, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            tok = torch.multinomial(torch.softmax(out.logits[:, -1].float(), -1), 1)
        sync()
        decode_s = time.perf_counter() - t0
        emit(family='model', precision=precision, name=f'prefill Qwen2.5-0.5B-shaped {layers}L batch {B}x{T}',
             value=B * T / prefill_s, unit='tok/s')
        emit(family='model', precision=precision, name=f'decode+sample Qwen2.5-0.5B-shaped {layers}L batch {B}',
             value=B * steps / decode_s, unit='tok/s')
    del model
    torch.cuda.empty_cache()


def train_case(label, cfg, B, T, steps, precision):
    ids = (torch.arange(B * T, device='cuda') * 104729 % cfg.vocab_size).view(B, T)
    results = []
    for mode in ('forward', 'full', 'lora'):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        model = make_model(cfg, 'fp32')  # master weights float32; bf16 via autocast
        if mode == 'lora':
            from peft import LoraConfig, get_peft_model
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, bias='none',
                                                     target_modules=['q_proj', 'k_proj', 'v_proj', 'o_proj',
                                                                     'gate_proj', 'up_proj', 'down_proj']))
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

        def step():
            if mode == 'forward':
                with torch.no_grad():
                    if precision == 'bf16':
                        with torch.autocast('cuda', dtype=torch.bfloat16):
                            model(input_ids=ids)
                    else:
                        model(input_ids=ids)
                return
            if precision == 'bf16':
                with torch.autocast('cuda', dtype=torch.bfloat16):
                    loss = model(input_ids=ids, labels=ids).loss
            else:
                loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            loss.item()  # one readback per step, as the WebGPU trainer does

        for _ in range(2):
            step()
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync()
        s = time.perf_counter() - t0
        tps = B * T * steps / s
        emit(family='train', precision=precision, mode=mode, name=f'{mode} {label} batch {B}x{T}', value=tps,
             unit='tok/s', ms_per_step=1000 * s / steps, peak_mib=torch.cuda.max_memory_allocated() / 2**20)
        del model, opt
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--only', default='model,train')
    ap.add_argument('--precision', default='fp32,bf16')
    args = ap.parse_args()
    only = set(args.only.split(','))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    emit(device=torch.cuda.get_device_name(0), torch=torch.__version__)
    layers = 2 if args.quick else 24
    for precision in args.precision.split(','):
        if 'model' in only:
            bench_model(layers, [1, 64] if args.quick else [1, 64, 256], 32, precision)
        if 'train' in only:
            train_case('tiny-qwen (64d 4L)', tiny_config(), 16, 96, 20, precision)
            train_case(f'Qwen2.5-0.5B-shaped {layers}L', qwen05_config(layers), 1, 32, 8, precision)
            if not args.quick:
                train_case(f'Qwen2.5-0.5B-shaped {layers}L', qwen05_config(layers), 22, 64, 8, precision)


if __name__ == '__main__':
    sys.exit(main())
