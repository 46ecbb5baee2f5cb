"""Load test of `peft serve`: many requests over many adapters while adapters come and go.

Usage: python bench/serve_load.py --peft build/peft [--requests 10000] [--adapters 100]
           [--clients 32] [--new 4] [--stream-every 4] [--timeout 1800]

Everything runs on loopback with bounded counts and time. It builds a small random LLaMA
(2 layers, 256 wide) whose vocabulary is a byte-level BPE trained on Debian's fortunes,
--adapters LoRA adapters for it (HF PEFT, r=8 on q_proj,v_proj, random weights), starts
`peft serve` with all of them, and then:
- --clients threads send --requests completions between them; each names an adapter
  drawn with Zipf(1) popularity (or the base), its prompt is 4-24 token ids, and every
  --stream-every-th one streams (SSE) to time its tokens;
- one more thread loads and unloads extra adapters (POST/DELETE /v1/adapters) all along.
It asserts that no request was lost or failed and that every response is well-formed
(usage adds up, token_ids and text present, SSE ends with [DONE]), and reports throughput,
TTFT and inter-token latency percentiles (client-side, streamed requests) and the server's
/metrics. Exit status 0 only when every check held.
"""
import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time


def make_model(out_dir):
    import glob
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    files = [f for f in glob.glob("/usr/share/games/fortunes/*") if not f.endswith((".dat", ".u8"))]
    tok.train(files, trainers.BpeTrainer(vocab_size=2048, special_tokens=["<|endoftext|>"],
                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    os.makedirs(out_dir, exist_ok=True)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"eos_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"}, f)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=256, intermediate_size=688, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=4, max_position_embeddings=512, eos_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    return tok.get_vocab_size()


def make_adapters(model_dir, out_dir, n):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    for i in range(n):
        torch.manual_seed(i)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.normal_(0, 0.05)
        model.save_pretrained(os.path.join(out_dir, f"a{i:03d}"))


class Server:
    def __init__(self, peft, model_dir, adapters_dir, names, port_file_dir):
        self.log = open(os.path.join(port_file_dir, "server.log"), "w")
        cmd = [peft, "serve", model_dir, "--port", "0", "--max-batch", "16", "--max-queue", "100000"]
        for n in names:
            cmd += ["--adapter", f"{n}={os.path.join(adapters_dir, n)}"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.port = None
        deadline = time.time() + 120
        for line in self.proc.stdout:  # the server prints its URL when it listens
            if "http://" in line:
                self.port = int(line.split("http://", 1)[1].split(":", 1)[1].split("/")[0].split()[0])
                break
            if time.time() > deadline:
                break
        if self.port is None:
            raise RuntimeError("peft serve did not start; see " + self.log.name)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=120)


def call(port, method, path, body=None, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def completion(port, model, prompt, new, stream):
    """Returns (ok, problem, ttft, inter-token gaps)."""
    body = {"model": model, "prompt": prompt, "max_tokens": new, "temperature": 0, "stream": stream}
    if not stream:
        t0 = time.perf_counter()
        status, data = call(port, "POST", "/v1/completions", body)
        if status != 200:
            return False, f"HTTP {status}: {data[:200]!r}", None, []
        j = json.loads(data)
        ch = j["choices"][0]
        u = j["usage"]
        if u["prompt_tokens"] != len(prompt) or u["total_tokens"] != u["prompt_tokens"] + u["completion_tokens"]:
            return False, f"usage does not add up: {u}", None, []
        if len(ch["token_ids"]) != u["completion_tokens"] or "text" not in ch or not ch.get("finish_reason"):
            return False, f"malformed choice: {ch}", None, []
        return True, "", time.perf_counter() - t0, []
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        return False, f"HTTP {r.status}: {r.read()[:200]!r}", None, []
    times, done, buf = [], False, b""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            done = True
            break
        json.loads(payload)  # every chunk is JSON
        times.append(time.perf_counter())
    c.close()
    if not done:
        return False, "stream ended without [DONE]", None, []
    if not times:
        return False, "stream had no chunks", None, []
    return True, "", times[0] - t0, [b - a for a, b in zip(times, times[1:])]


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))] * 1e3 if v else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peft", required=True)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--adapters", type=int, default=100)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--new", type=int, default=4)
    ap.add_argument("--stream-every", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=1800)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="serve_load_")
    try:
        model_dir, adapters_dir = os.path.join(tmp, "model"), os.path.join(tmp, "adapters")
        vocab = make_model(model_dir)
        make_adapters(model_dir, adapters_dir, args.adapters + 4)
        names = sorted(os.listdir(adapters_dir))
        served, extra = names[: args.adapters], names[args.adapters:]
        server = Server(args.peft, model_dir, adapters_dir, served, tmp)
        print(f"peft serve on port {server.port}: {len(served)} adapters, {args.requests} requests, "
              f"{args.clients} clients, {args.new} new tokens each", flush=True)
        weights = [1.0 / (k + 1) for k in range(len(served) + 1)]
        models = ["model"] + served  # the base by its folder name, then the adapters
        lock = threading.Lock()
        next_req = [0]
        failures, ttft, itl = [], [], []
        stop_churn = threading.Event()
        churn = {"loaded": 0, "unloaded": 0, "errors": []}

        def client(seed):
            rng = random.Random(seed)
            while True:
                with lock:
                    i = next_req[0]
                    next_req[0] += 1
                if i >= args.requests:
                    return
                model = rng.choices(models, weights)[0]
                prompt = [rng.randrange(1, vocab) for _ in range(rng.randint(4, 24))]
                try:
                    ok, why, t, gaps = completion(server.port, model, prompt, args.new, i % args.stream_every == 0)
                except Exception as e:  # a lost connection is a lost request
                    ok, why, t, gaps = False, repr(e), None, []
                with lock:
                    if not ok:
                        failures.append((i, model, why))
                    elif i % args.stream_every == 0:
                        ttft.append(t)
                        itl.extend(gaps)

        def churner():
            k = 0
            while not stop_churn.is_set():
                name = extra[k % len(extra)]
                s, d = call(server.port, "POST", "/v1/adapters", {"name": name, "path": os.path.join(adapters_dir, name)})
                if s == 200:
                    churn["loaded"] += 1
                else:
                    churn["errors"].append(f"load {name}: {s} {d[:100]!r}")
                time.sleep(0.05)
                s, d = call(server.port, "DELETE", f"/v1/adapters/{name}")
                if s == 200:
                    churn["unloaded"] += 1
                else:
                    churn["errors"].append(f"unload {name}: {s} {d[:100]!r}")
                k += 1

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client, args=(s,)) for s in range(args.clients)]
        ch = threading.Thread(target=churner)
        for t in threads + [ch]:
            t.start()
        for t in threads:
            t.join(max(1.0, args.timeout - (time.perf_counter() - t0)))
        stop_churn.set()
        ch.join(60)
        wall = time.perf_counter() - t0
        hung = sum(t.is_alive() for t in threads)
        _, metrics = call(server.port, "GET", "/metrics")
        rc = server.stop()
        done = min(next_req[0], args.requests)
        print(f"{done} requests in {wall:.1f} s: {done / wall:.1f} requests/s, {done * args.new / wall:.1f} tokens/s")
        print(f"TTFT (streamed, client side) p50 {pct(ttft, 0.5):.1f} ms p99 {pct(ttft, 0.99):.1f} ms; "
              f"inter-token p50 {pct(itl, 0.5):.1f} ms p99 {pct(itl, 0.99):.1f} ms")
        print(f"adapter churn: {churn['loaded']} loads, {churn['unloaded']} unloads, {len(churn['errors'])} errors")
        for line in metrics.decode().splitlines():
            if line and not line.startswith("#") and "_bucket" not in line:
                print("  metrics:", line)
        problems = failures[:5] + [(None, None, e) for e in churn["errors"][:5]]
        ok = not failures and not churn["errors"] and hung == 0 and done == args.requests and rc == 0
        for p in problems:
            print("  problem:", p)
        print(f"server exit status {rc}; {len(failures)} failed requests; {hung} clients still waiting")
        print("OK" if ok else "FAILED")
        sys.exit(0 if ok else 1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
