"""`import peft_cpp`: training from Python equals the CLI's run, and the model API matches
HF PEFT. Run by ctest (label python) as: python test_bindings.py PARITY_DIR PEFT_CLI SCRATCH.

Checks:
- peft_cpp.train and `peft train` on the same config give identical per-step losses and
  bit-identical adapter tensors;
- PeftModel(model, adapter).forward equals transformers + HF PEFT on the same adapter
  (fp32 logits <= 1e-4), merged and unmerged; generate equals HF's generate, greedy,
  with beams and processors, and seeded sampling, given the same keyword arguments, and
  refuses by name an argument it would not apply;
- tensors cross without copies: a parameter edited through named_parameters() changes
  the C++ model's output;
- a config typo is a ValueError naming the key.
"""
import json
import os
import shutil
import subprocess
import sys
import unittest

import torch
from safetensors.torch import load_file

PARITY, CLI, SCRATCH = sys.argv[1], sys.argv[2], sys.argv[3]
T5_PARITY = os.path.join(os.path.dirname(PARITY), "parity_t5")  # encoder-decoder fixtures
del sys.argv[1:4]
import peft_cpp  # noqa: E402  (PYTHONPATH is set by ctest)

MODEL = os.path.join(PARITY, "llama_mha")


def write_data(path, rows=24, seed=0):
    # Four sequences repeated: a few steps must memorize them, so the loss falls.
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(3, 120, (int(n),), generator=g).tolist() for n in (9, 14, 11, 17)]
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({"input_ids": seqs[i % 4]}) + "\n")


def config(out, data):
    return {"model": MODEL, "train_file": data, "output_dir": out, "max_steps": 6,
            "per_device_train_batch_size": 4, "learning_rate": 1e-2, "seed": 7, "progress": False,
            "method": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}}


def metric_losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [r["loss"] for r in map(json.loads, f) if "loss" in r]


class Bindings(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        shutil.rmtree(SCRATCH, ignore_errors=True)
        os.makedirs(SCRATCH)
        cls.data = os.path.join(SCRATCH, "data.jsonl")
        write_data(cls.data)
        cls.py_out = os.path.join(SCRATCH, "py")
        cls.result = peft_cpp.train(config(cls.py_out, cls.data))

    def test_train_matches_cli(self):
        cli_out = os.path.join(SCRATCH, "cli")
        cfg_path = os.path.join(SCRATCH, "cli.json")
        with open(cfg_path, "w") as f:
            json.dump(config(cli_out, self.data), f)
        subprocess.run([CLI, "train", "--config", cfg_path], check=True, capture_output=True)
        py_losses = [s["loss"] for s in self.result["steps"]]
        self.assertEqual(len(py_losses), 6)
        self.assertEqual(py_losses, metric_losses(cli_out))
        self.assertLess(py_losses[-1], py_losses[0])
        a = load_file(os.path.join(self.result["adapter_dir"], "adapter_model.safetensors"))
        b = load_file(os.path.join(cli_out, "adapter_model.safetensors"))
        self.assertEqual(sorted(a), sorted(b))
        for k in a:
            self.assertTrue(torch.equal(a[k], b[k]), k)

    def hf_model(self):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        base = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
        return PeftModel.from_pretrained(base, self.result["adapter_dir"]).eval()

    def test_forward_and_generate_match_hf_peft(self):
        ids = torch.randint(3, 120, (2, 11), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(ids)
        mask[1, :4] = 0  # left padding
        hf = self.hf_model()
        with torch.no_grad():
            want = hf(input_ids=ids, attention_mask=mask).logits
        m = peft_cpp.PeftModel(MODEL, self.result["adapter_dir"])
        got = m.forward(ids, mask)
        self.assertIsInstance(got, torch.Tensor)
        keep = mask.bool()
        self.assertLess((got - want)[keep].abs().max().item(), 1e-4)
        m.merge()
        self.assertLess((m.forward(ids, mask) - want)[keep].abs().max().item(), 1e-4)
        m.unmerge()
        prompt = ids[0, :5]
        with torch.no_grad():
            hf_gen = hf.generate(input_ids=prompt[None], attention_mask=torch.ones(1, 5, dtype=torch.long),
                                 max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
        self.assertEqual(m.generate([prompt.tolist()], max_new_tokens=12)[0], hf_gen[0].tolist())

    def test_generate_takes_transformers_arguments(self):
        # Beams with their best two answers and logits processors, then seeded sampling with
        # every filter: each prompt's answers equal transformers' generate() given the same
        # arguments (two prompts of different lengths, left-padded for transformers).
        prompts = [[5, 17, 42, 9, 63], [8, 99, 23]]
        width = max(map(len, prompts))
        ids = torch.zeros(2, width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        hf = self.hf_model()
        m = peft_cpp.PeftModel(MODEL, self.result["adapter_dir"])
        common = dict(max_new_tokens=8, eos_token_id=None, pad_token_id=0)
        cases = [dict(num_beams=3, num_return_sequences=2, repetition_penalty=1.3, no_repeat_ngram_size=2),
                 dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, min_p=0.05, num_return_sequences=2)]
        for case in cases:
            torch.manual_seed(5)
            with torch.no_grad():
                want = hf.generate(input_ids=ids, attention_mask=mask, **common, **case)[:, width:].tolist()
            got = m.generate(prompts, seed=5, **common, **case)
            self.assertEqual(len(got), 4, case)
            self.assertEqual([row[len(prompts[i // 2]):] for i, row in enumerate(got)], want, case)

    def test_generate_encoder_decoder_takes_the_same_arguments(self):
        # BART and Pegasus (tests/parity/make_t5.py): encoder prompts right-padded for
        # transformers, max_length counting the decoder start; answers up to their EOS.
        from transformers import AutoModelForSeq2SeqLM
        prompts = [[5, 17, 42, 9, 63, 2], [8, 59, 23, 2]]
        cases = [dict(max_length=9, num_beams=3, num_return_sequences=2, no_repeat_ngram_size=2),
                 dict(max_new_tokens=6, do_sample=True, top_k=10, num_return_sequences=2)]
        for name in ("bart", "pegasus"):
            folder = os.path.join(T5_PARITY, name)
            hf = AutoModelForSeq2SeqLM.from_pretrained(folder, dtype=torch.float32).eval()
            m = peft_cpp.PeftModel(folder)
            width = max(map(len, prompts))
            ids = torch.full((2, width), hf.config.pad_token_id)
            mask = torch.zeros_like(ids)
            for i, p in enumerate(prompts):
                ids[i, :len(p)] = torch.tensor(p)
                mask[i, :len(p)] = 1
            eos = hf.generation_config.eos_token_id
            eos = set(eos if isinstance(eos, list) else [eos])
            for case in cases:
                torch.manual_seed(3)
                with torch.no_grad():
                    rows = hf.generate(input_ids=ids, attention_mask=mask, **case)[:, 1:].tolist()
                want = [r[:next((i + 1 for i, t in enumerate(r) if t in eos), len(r))] for r in rows]
                got = m.generate(prompts, seed=3, **case)
                self.assertEqual([g[len(prompts[i // 2]):] for i, g in enumerate(got)], want, (name, case))

    def test_generate_refuses_what_it_does_not_apply(self):
        m = peft_cpp.PeftModel(MODEL)
        for kwargs, message in [(dict(num_beam=3), "unknown or unsupported argument 'num_beam'"),
                                (dict(typical_p=0.5), "'typical_p' \\(not applied here\\)"),
                                (dict(max_length=10), "'max_length' counts the prompt"),
                                (dict(top_k="5"), "'top_k'"),
                                (dict(num_return_sequences=2), "needs sampling or beam search")]:
            with self.assertRaisesRegex((ValueError, RuntimeError), message):
                m.generate([[5, 6, 7]], **kwargs)

    def test_parameters_share_memory(self):
        m = peft_cpp.PeftModel(MODEL)
        ids = torch.tensor([[5, 6, 7, 8]])
        before = m.forward(ids).clone()
        w = m.named_parameters()["lm_head.weight"]
        self.assertEqual(w.data_ptr(), m.named_parameters()["lm_head.weight"].data_ptr())
        with torch.no_grad():
            w.mul_(2.0)  # in place, on the C++ model's own storage
        self.assertTrue(torch.allclose(m.forward(ids), before * 2.0, rtol=1e-5, atol=1e-5))

    def test_adapter_api(self):
        m = peft_cpp.PeftModel(MODEL, {"a": self.result["adapter_dir"]})
        self.assertEqual(m.adapters, ["a"])
        self.assertEqual(m.active_adapters, ["a"])
        trainable, total = m.trainable_parameters()
        self.assertGreater(total, trainable)
        self.assertIn("trainable params", m.trainable_parameters_line())
        out = os.path.join(SCRATCH, "saved")
        m.save_adapter(out, "a")
        a = load_file(os.path.join(out, "adapter_model.safetensors"))
        b = load_file(os.path.join(self.result["adapter_dir"], "adapter_model.safetensors"))
        self.assertTrue(all(torch.equal(a[k], b[k]) for k in b))

    def test_errors_name_the_key(self):
        cfg = config(os.path.join(SCRATCH, "bad"), self.data)
        cfg["learning_rat"] = 1e-3
        with self.assertRaisesRegex((ValueError, RuntimeError), "unknown key 'learning_rat'"):
            peft_cpp.train(cfg)
        with self.assertRaisesRegex((ValueError, RuntimeError), "no_such_dir"):
            peft_cpp.PeftModel(os.path.join(SCRATCH, "no_such_dir"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
