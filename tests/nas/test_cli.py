import csv

from nas.cli import main
from search_spaces import SPACES


def test_spaces_lists_every_registered_space(capsys):
    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    for name in SPACES:
        assert name in out


def test_measure_writes_arch_latency_csv(tmp_path):
    out = tmp_path / "m.csv"
    code = main(["measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "3", "--out", str(out),
                 "--rounds", "2", "--space-option", "resolutions=[32]", "--space-option", "num_classes=10",
                 "--no-progress"])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["arch", "latency_ms"] and len(rows) == 3
    assert len({r["arch"] for r in rows}) == 3 and all(float(r["latency_ms"]) > 0 for r in rows)
    # second call is served from the store: same numbers
    out2 = tmp_path / "m2.csv"
    main(["measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "3", "--out", str(out2),
          "--rounds", "2", "--space-option", "resolutions=[32]", "--space-option", "num_classes=10",
          "--no-progress"])
    assert out.read_text() == out2.read_text()


def test_export_of_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), "--top", "1"]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    import pytest

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"hwnas {version('hwnas')}"


def test_every_argument_has_help():
    import argparse

    from nas.cli import build_parser

    missing = []

    def walk(parser, path):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{path} {name}")
            elif not action.help:
                missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")

    walk(build_parser(), "hwnas")
    assert not missing


def test_spaces_lists_each_spaces_options_with_defaults(capsys):
    from nas.commands.spaces import space_options

    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    options = dict(space_options(SPACES.get("mbv3")))
    assert options["num_classes"] == 1000 and "resolutions" in options
    assert "num_classes=1000" in out


def test_measure_remote_options_are_refused_for_a_local_runner(tmp_path, capsys):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    code = main(["measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "1", "--out",
                 str(tmp_path / "m.csv"), "--token-file", str(token)])
    assert code == 2
    err = capsys.readouterr().err
    assert "remote runner" in err and "s3cret" not in err


def test_measure_reads_the_token_from_the_token_file(tmp_path, capsys):
    # the remote runner is built with the file's token: an unreachable server then fails,
    # never a "needs the device token" error
    from types import SimpleNamespace

    from nas.commands.measure import remote_options

    token = tmp_path / "token"
    token.write_text("s3cret\n")
    args = SimpleNamespace(servers="http://127.0.0.1:9", token_file=str(token), runner="remote")
    assert remote_options(args) == {"servers": "http://127.0.0.1:9", "token": "s3cret"}
    token.write_text("\n")
    import pytest

    with pytest.raises(ValueError, match="empty"):
        remote_options(args)


def test_quiet_and_verbose_set_the_console_level(tmp_path, capsys):
    # -q: no status lines on stderr; default: one plain line per measured batch, no escape codes
    args = ["measure", "--space", "mbv3", "--runner", "onnxruntime", "--count", "2",
            "--out", str(tmp_path / "m.csv"), "--rounds", "2", "--space-option", "resolutions=[32]", "--space-option", "num_classes=10"]
    assert main(["-q", *args, "--store", str(tmp_path / "a.db")]) == 0
    assert "measuring" not in capsys.readouterr().err
    assert main([*args, "--store", str(tmp_path / "b.db")]) == 0
    err = capsys.readouterr().err
    import re

    assert re.search(r"^measuring: \d+/\d+$", err, re.M) and "\x1b[" not in err and "\r" not in err
