#!/usr/bin/python3
"""Paper baseline: the detached Jacobian by PyTorch autograd, as in jamesgolden1/equivalent-linear-LLMs.

Reproduces the reference implementation's method (reference-implementation.md §1.3-1.4): a hand-written decoder
forward `model_forward(embeds)` whose nonlinear factors are `.detach()`ed (RMSNorm rsqrt factor, act(gate) of
SwiGLU, q and k after RoPE so the softmax probabilities carry no gradient), differentiated with

    torch.autograd.functional.jacobian(model_forward, embeds, vectorize=True, strategy="reverse-mode")

giving J of shape [d_out, n, d_in]; the reconstruction y_hat = sum_t J[:, t, :] @ x_t must equal the real output y.

Only numpy and torch (Debian python3-torch 1.13 / python3-numpy) are used; safetensors and config.json are parsed
here. Supported: model_type "llama" and "qwen3" (q_norm/k_norm per head before RoPE), RoPE default / linear /
llama3, GQA, tied or untied embeddings (the LM head is never needed: y is the final-normed hidden state).

Usage:
    /usr/bin/python3 detached_jacobian_autograd.py MODEL_DIR --token-ids 1,2,3 [--dtype float64|float32]
                     [--threads 2] [--out DIR]
"""

import argparse
import json
import math
import os
import resource
import struct
import sys
import time

import numpy as np
import torch

# ----------------------------------------------------------------------------------------------------------------
# safetensors (own parser: 8-byte little-endian header length, JSON header, raw little-endian data)
# ----------------------------------------------------------------------------------------------------------------

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16}


class SafeTensors:
    """Lazily reads tensors from one or more .safetensors files (sharded checkpoints via the index json)."""

    def __init__(self, model_dir):
        index = os.path.join(model_dir, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                weight_map = json.load(f)["weight_map"]
            files = sorted(set(weight_map.values()))
        else:
            files = sorted(p for p in os.listdir(model_dir) if p.endswith(".safetensors"))
            if not files:
                raise SystemExit(f"no .safetensors file in {model_dir}")
        self.entries = {}  # name -> (path, data_start, info)
        for fn in files:
            path = os.path.join(model_dir, fn)
            with open(path, "rb") as f:
                (hlen,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(hlen))
            for name, info in header.items():
                if name == "__metadata__":
                    continue
                self.entries[name] = (path, 8 + hlen, info)

    def __contains__(self, name):
        return name in self.entries

    def numpy(self, name, rows=None):
        """The tensor as a float32/float64 numpy array (BF16 widened exactly: uint16 << 16 viewed as float32).
        `rows`: optional list of row indices to read only those rows (used for the embedding lookup)."""
        path, start, info = self.entries[name]
        dt = info["dtype"]
        if dt not in _ST_DTYPES:
            raise SystemExit(f"unsupported safetensors dtype {dt} for {name}")
        shape = tuple(info["shape"])
        b0, b1 = info["data_offsets"]
        count = int(np.prod(shape)) if shape else 1
        npdt = np.dtype(_ST_DTYPES[dt]).newbyteorder("<")
        if (b1 - b0) != count * npdt.itemsize:
            raise SystemExit(f"size mismatch for {name}")
        arr = np.memmap(path, dtype=npdt, mode="r", offset=start + b0, shape=shape)
        if rows is not None:
            arr = arr[np.asarray(rows, dtype=np.int64)]
        arr = np.array(arr)  # plain, writable, contiguous copy (memmap is read-only)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif dt == "F16":
            arr = arr.astype(np.float32)
        return arr


# ----------------------------------------------------------------------------------------------------------------
# config
# ----------------------------------------------------------------------------------------------------------------


class Config:
    def __init__(self, model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            c = json.load(f)
        self.model_type = c.get("model_type")
        if self.model_type not in ("llama", "qwen3"):
            raise SystemExit(f"model_type {self.model_type!r} not supported (llama, qwen3)")
        self.d = c["hidden_size"]
        self.inter = c["intermediate_size"]
        self.layers = c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.K = c.get("num_key_value_heads") or self.H
        hd = c.get("head_dim")
        # HF class defaults: Llama head_dim = d/H; Qwen3Config head_dim = 128 (architectures.md §1.8).
        self.D = hd if hd is not None else (128 if self.model_type == "qwen3" else self.d // self.H)
        self.eps = c.get("rms_norm_eps", 1e-6)
        rope = c.get("rope_parameters") or {}
        self.theta = c.get("rope_theta", rope.get("rope_theta", 10000.0))
        self.rope_scaling = c.get("rope_scaling") or (rope if rope.get("rope_type", "default") != "default" else None)
        self.max_pos = c.get("max_position_embeddings", 2048)
        self.tie = c.get("tie_word_embeddings", False)
        act = c.get("hidden_act", "silu")
        if act != "silu":
            raise SystemExit(f"hidden_act {act!r} not supported (silu)")
        if c.get("attention_bias") or c.get("mlp_bias"):
            raise SystemExit("attention_bias / mlp_bias not supported (the detached map would be affine)")
        if self.model_type == "qwen3" and c.get("use_sliding_window"):
            raise SystemExit("use_sliding_window=true not supported")
        if self.H % self.K:
            raise SystemExit("num_attention_heads must be a multiple of num_key_value_heads")


# ----------------------------------------------------------------------------------------------------------------
# model
# ----------------------------------------------------------------------------------------------------------------


def inverse_frequencies(cfg, dtype):
    """omega_i = 1/theta^(2i/D) (rotate_half RoPE over the full head dim), then rope_scaling (linear, llama3).
    Computed in the compute dtype (float64 mode: double throughout; HF would use float32 here)."""
    D = cfg.D
    i2 = torch.arange(0, D, 2, dtype=torch.int64).to(dtype)
    omega = 1.0 / (torch.tensor(cfg.theta, dtype=dtype) ** (i2 / D))
    rs = cfg.rope_scaling
    if rs:
        kind = rs.get("rope_type", rs.get("type", "default"))
        if kind == "linear":
            omega = omega / rs["factor"]
        elif kind == "llama3":
            f, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
            n0 = rs.get("original_max_position_embeddings", cfg.max_pos)
            low_wl, high_wl = n0 / lo, n0 / hi
            wl = 2 * math.pi / omega
            scaled = torch.where(wl > low_wl, omega / f, omega)
            s = (n0 / wl - lo) / (hi - lo)
            smoothed = (1 - s) * scaled / f + s * scaled
            medium = (wl >= high_wl) & (wl <= low_wl)
            omega = torch.where(medium, smoothed, scaled)
        elif kind != "default":
            raise SystemExit(f"rope_type {kind!r} not supported (default, linear, llama3)")
    return omega


class Model:
    def __init__(self, model_dir, dtype):
        self.cfg = cfg = Config(model_dir)
        self.st = SafeTensors(model_dir)
        self.dtype = dtype

        def W(name):  # converted to the compute dtype once, here
            return torch.from_numpy(self.st.numpy(name)).to(dtype).contiguous()

        self.layers = []
        for i in range(cfg.layers):
            p = f"model.layers.{i}."
            lw = {k: W(p + n) for k, n in [
                ("in_norm", "input_layernorm.weight"), ("post_norm", "post_attention_layernorm.weight"),
                ("q", "self_attn.q_proj.weight"), ("k", "self_attn.k_proj.weight"),
                ("v", "self_attn.v_proj.weight"), ("o", "self_attn.o_proj.weight"),
                ("gate", "mlp.gate_proj.weight"), ("up", "mlp.up_proj.weight"), ("down", "mlp.down_proj.weight")]}
            if cfg.model_type == "qwen3":
                lw["q_norm"] = W(p + "self_attn.q_norm.weight")
                lw["k_norm"] = W(p + "self_attn.k_norm.weight")
            self.layers.append(lw)
        self.final_norm = W("model.norm.weight")
        self.omega = inverse_frequencies(cfg, dtype)

    def embed(self, ids):
        vocab = self.st.entries["model.embed_tokens.weight"][2]["shape"][0]
        bad = [t for t in ids if not 0 <= t < vocab]
        if bad:
            raise SystemExit(f"token ids {bad} out of range (vocab {vocab})")
        # Only the rows of the prompt are read and converted (the LM head is not needed for y).
        return torch.from_numpy(self.st.numpy("model.embed_tokens.weight", rows=ids)).to(self.dtype)

    # -- building blocks -----------------------------------------------------------------------------------------

    def rms_norm(self, x, w, detach):
        # Paper (patched HF): hidden * torch.rsqrt(variance + eps).detach(); weight * hidden.
        # The paper upcasts to float32 first; here float64 stays float64 ("true double"), float32 is a no-op.
        r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.cfg.eps)
        if detach:
            r = r.detach()
        return w * (x * r)

    @staticmethod
    def rotate_half(x):
        h = x.shape[-1] // 2
        return torch.cat((-x[..., h:], x[..., :h]), dim=-1)

    def forward(self, embeds, detach):
        """embeds [n, d] -> final-normed hidden state at the last position [d]."""
        cfg = self.cfg
        n = embeds.shape[0]
        H, K, D = cfg.H, cfg.K, cfg.D
        G = H // K
        pos = torch.arange(n, dtype=self.dtype)
        ang = pos[:, None] * self.omega[None, :]                  # [n, D/2]
        emb = torch.cat((ang, ang), dim=-1)                        # HF: cat(freqs, freqs)
        cos, sin = emb.cos()[:, None, :], emb.sin()[:, None, :]    # [n, 1, D]
        mask = torch.full((n, n), torch.finfo(self.dtype).min, dtype=self.dtype).triu(1)  # additive causal mask
        scale = D ** -0.5
        h = embeds
        for lw in self.layers:
            # --- attention
            x = self.rms_norm(h, lw["in_norm"], detach)
            q = torch.nn.functional.linear(x, lw["q"]).view(n, H, D)
            k = torch.nn.functional.linear(x, lw["k"]).view(n, K, D)
            v = torch.nn.functional.linear(x, lw["v"]).view(n, K, D)
            if cfg.model_type == "qwen3":
                q = self.rms_norm(q, lw["q_norm"], detach)
                k = self.rms_norm(k, lw["k_norm"], detach)
            q = q * cos + self.rotate_half(q) * sin
            k = k * cos + self.rotate_half(k) * sin
            if detach:  # paper: q and k detached after RoPE -> probabilities carry no gradient
                q, k = q.detach(), k.detach()
            # GQA as HF repeat_kv: kv head j serves query heads j*G .. j*G+G-1
            k = k.repeat_interleave(G, dim=1)
            v = v.repeat_interleave(G, dim=1)
            q, k, v = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # [H, n, D]
            scores = torch.matmul(q, k.transpose(1, 2)) * scale + mask
            probs = torch.softmax(scores, dim=-1)
            if detach:
                probs = probs.detach()  # moot (q, k already frozen); the paper's eager branch does this too
            o = torch.matmul(probs, v).transpose(0, 1).reshape(n, H * D)
            h = h + torch.nn.functional.linear(o, lw["o"])
            # --- MLP: down(act(gate x).detach() * up x)
            x = self.rms_norm(h, lw["post_norm"], detach)
            g = torch.nn.functional.silu(torch.nn.functional.linear(x, lw["gate"]))
            if detach:
                g = g.detach()
            h = h + torch.nn.functional.linear(g * torch.nn.functional.linear(x, lw["up"]), lw["down"])
        return self.rms_norm(h[-1], self.final_norm, detach)


# ----------------------------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------------------------


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--token-ids", required=True, help="comma-separated token ids, e.g. 1,2,3")
    ap.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", help="write jacobian.npy [d,n,d] float64 and output.npy [d] here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    ids = [int(t) for t in args.token_ids.split(",") if t.strip()]

    t0 = time.perf_counter()
    model = Model(args.model_dir, dtype)
    embeds = model.embed(ids)  # [n, d], the paper's `embeds` (embedding output)
    t_load = time.perf_counter() - t0
    cfg = model.cfg
    print(f"model {cfg.model_type}: d={cfg.d} I={cfg.inter} L={cfg.layers} H={cfg.H} K={cfg.K} D={cfg.D}; "
          f"n={len(ids)} tokens; dtype={args.dtype}; threads={torch.get_num_threads()}")
    print(f"load+convert   {t_load:10.3f} s")

    # (1) real (non-detached) forward: y = final-normed hidden state at the last position
    t1 = time.perf_counter()
    with torch.no_grad():
        y = model.forward(embeds, detach=False)
    t_fwd = time.perf_counter() - t1

    # (2)+(3) detached forward as a function of the embeddings; J by reverse-mode, vectorized autograd
    def model_forward(e):
        return model.forward(e, detach=True)

    t2 = time.perf_counter()
    J = torch.autograd.functional.jacobian(model_forward, embeds, vectorize=True, strategy="reverse-mode")
    t_jac = time.perf_counter() - t2  # J: [d_out, n, d_in]
    t_total = t_fwd + t_jac

    # (4) reconstruction y_hat = sum_t J_t x_t
    with torch.no_grad():
        y_hat = torch.einsum("otd,td->o", J, embeds)
        fwd_check = model_forward(embeds)
    rel = (torch.linalg.vector_norm(y_hat - y) / torch.linalg.vector_norm(y)).item()
    rel_fwd = (torch.linalg.vector_norm(fwd_check - y) / torch.linalg.vector_norm(y)).item()

    print(f"jacobian shape {tuple(J.shape)}")
    print(f"model_forward vs real forward  rel error {rel_fwd:.3e}")
    print(f"reconstruction |y_hat-y|/|y|   rel error {rel:.3e}")
    print(f"forward        {t_fwd:10.3f} s")
    print(f"jacobian       {t_jac:10.3f} s")
    print(f"total          {t_total:10.3f} s   (forward + jacobian)")
    print(f"peak RSS       {peak_rss_mib():10.1f} MiB")

    if args.out:
        os.makedirs(args.out, exist_ok=True)
        np.save(os.path.join(args.out, "jacobian.npy"), J.detach().to(torch.float64).numpy())
        np.save(os.path.join(args.out, "output.npy"), y.to(torch.float64).numpy())
        print(f"wrote {args.out}/jacobian.npy, output.npy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
