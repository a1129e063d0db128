"""SFT: response-only loss mask, bad-row errors, our tiny model with packing + resume, a tiny HF Qwen2 (+ LoRA)."""

import json

import pytest
import torch
from conftest import needs_cxx

from r1lab.train.sft import SFTConfig, batch_loss, build_datasets, read_rows, run_sft


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    from r1lab.tasks import make_split

    rows = [{"prompt": p.prompt, "response": f"<think>\n{p.solution}\n</think>\n\nThe answer is {p.answer}."}
            for p in make_split("train", 10, families=["arithmetic", "word"])]
    rows.append({"messages": [{"role": "user", "content": "What is 1 + 1?"},
                              {"role": "assistant", "content": "2"}]})
    path = tmp_path_factory.mktemp("data") / "sft.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_loss_mask_trains_response_tokens_only(tokenizer_dir, data_file):
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.train.models import model_from_preset

    tok = load_tokenizer(tokenizer_dir)
    cfg = SFTConfig(data=data_file, template="r1-zero", seq_len=1024, eval_frac=0.0)
    train, _, info = build_datasets(cfg, tok, packed_attention=True)
    assert info["train_examples"] == 21 and info["cut_examples"] == 0
    # every label is either -100 or equals its input id; prompt text never appears among trained tokens
    lab, ids = train.labels_NT, train.input_ids_NT
    assert torch.equal(lab[lab != -100], ids[lab != -100])
    prompt_ids = tok.encode("A conversation between User and Assistant")
    row = ids[0].tolist()
    at = next(i for i in range(len(row)) if row[i : i + len(prompt_ids)] == prompt_ids)
    assert (lab[0, at : at + len(prompt_ids)] == -100).all()
    # the loss counts exactly the response tokens, and changing prompt-only labels cannot change it
    model = model_from_preset("tiny", tok.vocab_size)
    batch = {"input_ids": ids[:2], "labels": lab[:2], "doc_ids": train.doc_ids_NT[:2],
             "position_ids": train.position_ids_NT[:2]}
    loss, n = batch_loss(model, batch, ours=True, mtp_weight=0.0)
    assert n == int((lab[:2] != -100).sum()) and torch.isfinite(loss)
    # keeping masked padding columns (widths rounded up to a multiple, as on a GPU) changes nothing: 100 padding
    # columns appended, a multiple of 96 keeps some of them (asserted) and the loss stays the same
    padded = {k: torch.cat([v, torch.full((2, 100), -100 if k == "labels" else 0, dtype=v.dtype)], dim=1)
              for k, v in batch.items()}
    real = int((batch["doc_ids"] != 0).long().cumsum(1).argmax(1).max()) + 1
    assert -(-real // 96) * 96 > real
    loss96, n96 = batch_loss(model, padded, ours=True, mtp_weight=0.0, width_multiple=96)
    assert n96 == n and torch.allclose(loss96, loss, rtol=1e-5)


def test_bad_row_names_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"prompt": "a", "response": "b"}\n\n{"prompt": "a"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: needs string fields"):
        read_rows(p)
    p.write_text('{"prompt": "a", "response": "b"}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: invalid JSON"):
        read_rows(p)


def test_bad_messages_name_file_and_line(tokenizer_dir, tmp_path):
    """A message that is not an object, or a role the chat template refuses: file:line errors, no traceback."""
    from r1lab.data.tokenizer import load_tokenizer
    from r1lab.train.sft import encode_row

    p = tmp_path / "msgs.jsonl"
    p.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                 '{"messages": ["x"]}\n')
    with pytest.raises(ValueError, match=r"msgs.jsonl:2: messages\[0\] must be an object"):
        read_rows(p)
    p.write_text('{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n')
    (row, where), = read_rows(p)
    with pytest.raises(ValueError, match=r"msgs.jsonl:1: .*wizard|msgs.jsonl:1: .*role"):
        encode_row(row, where, load_tokenizer(tokenizer_dir), "r1")


def test_ours_packed_runs_learns_and_resumes(tokenizer_dir, data_file, tmp_path):
    base = dict(data=data_file, tokenizer=tokenizer_dir, preset="tiny", out_dir=str(tmp_path), seq_len=256,
                micro_batch=4, lr=3e-3, warmup_steps=0, schedule="constant", eval_every=0, eval_frac=0.2,
                template="r1", mtp_weight=0.3)
    first = run_sft(SFTConfig(**base, max_steps=8))
    assert first["steps"] == 8 and first["eval_loss"] < first["eval_loss_first"]
    assert (tmp_path / "final" / "model.safetensors").is_file() and (tmp_path / "final" / "tokenizer.json").is_file()
    again = run_sft(SFTConfig(**base, max_steps=10, resume=True))
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert again["steps"] == 10 and steps[-2:] == [9, 10]


@pytest.mark.slow
@needs_cxx
def test_compiled_sft_matches_eager(tokenizer_dir, data_file, tmp_path):
    """``compile=True`` (recommended on a GPU) gives the eager losses (CPU inductor; varying batch widths)."""
    base = dict(data=data_file, tokenizer=tokenizer_dir, preset="tiny", seq_len=256, micro_batch=4, lr=3e-3,
                warmup_steps=0, schedule="constant", eval_every=0, eval_frac=0.2, template="r1", mtp_weight=0.3,
                max_steps=3)
    losses = []
    for compile in (False, True):
        out = run_sft(SFTConfig(**base, out_dir=str(tmp_path / str(compile)), compile=compile))
        rows = [json.loads(x) for x in (tmp_path / str(compile) / "metrics.jsonl").read_text().splitlines()]
        losses.append([r["loss"] for r in rows if "loss" in r] + [out["eval_loss"]])
    assert len(losses[0]) == 4
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), rtol=1e-4, atol=0)


@pytest.mark.parametrize("lora_r", [0, 4])
@pytest.mark.parametrize("dtype", ["auto", "amp"])
def test_tiny_hf_qwen2_from_config(tokenizer_dir, data_file, tmp_path, lora_r, dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from r1lab.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    cfg = Qwen2Config(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_id, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(tmp_path / "qwen")
    out = run_sft(SFTConfig(data=data_file, model=str(tmp_path / "qwen"), tokenizer=tokenizer_dir,
                            out_dir=str(tmp_path / "run"), seq_len=256, micro_batch=4, max_steps=4, lr=5e-3,
                            warmup_steps=0, eval_frac=0.2, lora_r=lora_r, dtype=dtype))
    assert out["steps"] == 4 and out["eval_loss"] < out["eval_loss_first"]
    reloaded = Qwen2ForCausalLM.from_pretrained(out["final_dir"])  # merged LoRA saves as a plain model
    assert reloaded.config.vocab_size == tok.vocab_size
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "final" / "model.safetensors"), "pt") as f:
        base = f.get_tensor("model.embed_tokens.weight").dtype
    # amp: fp32 master weights for a full fine-tune; with LoRA the frozen base is bf16 (CPU "auto" = fp32)
    assert base == (torch.bfloat16 if dtype == "amp" and lora_r else torch.float32)
    if lora_r:
        adapter = next((tmp_path / "run" / "checkpoints").glob("step-*/adapter/adapter_model.safetensors"))
        with safe_open(str(adapter), "pt") as f:
            assert all(f.get_tensor(k).dtype == torch.float32 for k in f.keys())  # the trained adapters stay fp32


def test_amp_trains_fp32_weights_under_bf16_autocast(tokenizer_dir, data_file, tmp_path):
    """dtype="amp" (what "auto" means on CUDA) on CPU: bf16 forward, fp32 weights saved, the loss still falls."""
    from safetensors import safe_open

    out = run_sft(SFTConfig(data=data_file, tokenizer=tokenizer_dir, preset="tiny", out_dir=str(tmp_path),
                            seq_len=256, micro_batch=4, lr=3e-3, warmup_steps=0, schedule="constant", eval_every=0,
                            eval_frac=0.2, template="r1", max_steps=8, dtype="amp"))
    assert out["eval_loss"] < out["eval_loss_first"]
    with safe_open(str(tmp_path / "final" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.float32
    fp32 = run_sft(SFTConfig(data=data_file, tokenizer=tokenizer_dir, preset="tiny", out_dir=str(tmp_path / "f"),
                             seq_len=256, micro_batch=4, lr=3e-3, warmup_steps=0, schedule="constant", eval_every=0,
                             eval_frac=0.2, template="r1", max_steps=8, dtype="fp32"))
    assert out["eval_loss_first"] != fp32["eval_loss_first"]  # the autocast forward really ran in bf16
    assert abs(out["eval_loss_first"] - fp32["eval_loss_first"]) < 0.05
