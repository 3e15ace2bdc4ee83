"""`bigbatch data pack|inspect`: sizes parsed, shards written and inspected, bad input one line with exit 2."""

import io
import json
import sys
from pathlib import Path

import pytest

from bigbatch.cluster import cli, cli_data
from bigbatch.trainer.errors import RecipeError
from tests.images import sample_photos


def run(capsys, *argv) -> tuple[int, str, str]:
    """The `data` command through cluster.cli.main once it is wired there, else the same parse + error
    handling around cli_data's own handlers."""
    argv = [str(a) for a in argv]
    try:
        cli.make_parser()
        if "data" in cli.COMMANDS:
            code = cli.main(argv)
        else:
            parser = cli._Parser(prog="bigbatch")
            commands = cli_data.add_commands(parser.add_subparsers(dest="command", required=True,
                                                                   parser_class=cli._Parser), cli._recipe_args)
            args = parser.parse_args(argv)
            try:
                code = commands[args.command](args)
            except RecipeError as e:
                print(f"bigbatch: error: {e}", file=sys.stderr)
                code = e.exit_code
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def folder(tmp_path) -> Path:
    from PIL import Image

    photo = sample_photos()[0]
    for split, count in (("train", 4), ("val", 2)):
        for c in range(2):
            d = tmp_path / "src" / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(count):
                buf = io.BytesIO()
                Image.fromarray(photo[20 * i:20 * i + 60 + 10 * c, 30 * i:30 * i + 80]).save(buf, "JPEG")
                (d / f"{i}.jpg").write_bytes(buf.getvalue())
    return tmp_path / "src"


@pytest.mark.parametrize("text, size", [("500MB", 500 * 10**6), ("1GB", 10**9), ("64KB", 64_000), ("64kb", 64_000),
                                        ("1.5 GB", 1_500_000_000), ("2GiB", 2 * 2**30), ("4096", 4096),
                                        ("10M", 10**7)])
def test_parse_size(text, size):
    assert cli_data.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "lots", "1XB", "-5MB", "0", "1e9", "GB"])
def test_bad_size_names_the_option(text):
    with pytest.raises(RecipeError, match="^--shard-size: "):
        cli_data.parse_size(text)


def test_pack_then_inspect(capsys, folder, tmp_path):
    out = tmp_path / "shards"
    code, stdout, err = run(capsys, "data", "pack", folder, out, "--shard-size", "12KB")
    assert code == 0 and err == ""
    assert "train 8 samples in" in stdout and "val 4 samples" in stdout
    index = json.loads((out / "index.json").read_text())
    assert index["classes"] == ["class0", "class1"] and len(index["splits"]["train"]["shards"]) > 1
    code, stdout, err = run(capsys, "data", "inspect", out, "--verify")
    assert code == 0 and err == ""
    assert "train: 8 samples in" in stdout and "per class: class0 4, class1 4" in stdout
    n = len(index["splits"]["train"]["shards"])
    assert f"sha256: {n}/{n} shards match" in stdout
    code, stdout, _ = run(capsys, "data", "inspect", folder, "--json")
    report = json.loads(stdout)
    assert code == 0 and report["kind"] == "folder" and report["splits"]["val"]["per_class"]["class1"] == 2
    assert report["splits"]["train"]["images"]["height"]["max"] == 70


def test_damaged_shard_found_by_inspect_verify(capsys, folder, tmp_path):
    out = tmp_path / "shards"
    assert run(capsys, "data", "pack", folder, out, "--split", "val")[0] == 0
    shard = out / "val-000000.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 1
    shard.write_bytes(bytes(data))
    code, stdout, err = run(capsys, "data", "inspect", out, "--verify")
    assert code == 2 and "PROBLEM val-000000.tar: sha256 differs" in stdout
    assert err.count("\n") == 1 and "val-000000.tar: sha256 differs" in err


@pytest.mark.parametrize("argv, message", [
    (["--shard-size", "big"], "bigbatch: error: --shard-size: 'big' is not a size"),
    (["--shard-size", "0MB"], "bigbatch: error: --shard-size: '0MB' must be more than 0 bytes"),
])
def test_bad_shard_size_is_one_line_exit_2(capsys, folder, tmp_path, argv, message):
    code, stdout, err = run(capsys, "data", "pack", folder, tmp_path / "out", *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith(message) and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_source_and_bad_path_are_one_line_exit_2(capsys, tmp_path):
    code, _, err = run(capsys, "data", "pack", tmp_path / "nope", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and "nope: directory not found" in err
    code, _, err = run(capsys, "data", "inspect", tmp_path / "nope")
    assert code == 2 and err.count("\n") == 1 and "nope: not found" in err
    code, _, err = run(capsys, "data", "frobnicate")
    assert code == 2 and err.count("\n") == 1
