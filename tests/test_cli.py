"""The r1lab command: bad input ends in one clear line, not a traceback."""


def test_cli_bad_input_is_one_clear_line():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "r1lab", "info", "--model", "/no/such/dir"], capture_output=True,
                         text=True)
    assert out.returncode == 2
    assert "no such model directory" in out.stderr and "Traceback" not in out.stderr


def test_output_directory_that_is_a_file_is_one_clear_line(tmp_path, capsys):
    from r1lab.cli import main

    blocker = tmp_path / "out"
    blocker.write_text("not a directory")
    code = main(["pretrain", "--preset", "tiny", "--out-dir", str(blocker), "--steps", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(blocker) in err and "Traceback" not in err


def test_convert_to_fp8_and_back(tmp_path, capsys):
    """`r1lab convert --fp8` writes DeepSeek's FP8 format with the tokenizer beside it; converting that back gives
    the dequantised weights in the asked dtype; a non-empty output folder or a bad source is one clear line."""
    import json

    import torch
    from safetensors.torch import load_file

    from r1lab.cli import main
    from r1lab.model import DeepSeekV3Config, DeepSeekV3ForCausalLM

    torch.manual_seed(0)
    src = tmp_path / "src"
    DeepSeekV3ForCausalLM(DeepSeekV3Config.from_preset("tiny")).save_pretrained(src)
    (src / "tokenizer.json").write_text("{}")
    assert main(["convert", str(src), str(tmp_path / "fp8"), "--fp8"]) == 0
    assert "FP8" in capsys.readouterr().out
    sd = load_file(tmp_path / "fp8" / "model.safetensors")
    assert sd["model.layers.0.self_attn.o_proj.weight"].dtype == torch.float8_e4m3fn
    assert "model.layers.0.self_attn.o_proj.weight_scale_inv" in sd
    assert json.loads((tmp_path / "fp8" / "config.json").read_text())["quantization_config"]["quant_method"] == "fp8"
    assert (tmp_path / "fp8" / "tokenizer.json").read_text() == "{}"
    assert main(["convert", str(tmp_path / "fp8"), str(tmp_path / "bf16"), "--dtype", "bfloat16"]) == 0
    back = load_file(tmp_path / "bf16" / "model.safetensors")
    assert back["model.layers.0.self_attn.o_proj.weight"].dtype == torch.bfloat16
    assert not any(k.endswith("weight_scale_inv") for k in back)
    assert not (tmp_path / "bf16.tmp").exists()
    capsys.readouterr()
    assert main(["convert", str(src), str(tmp_path / "fp8")]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
