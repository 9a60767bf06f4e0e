"""One command-line vocabulary: the shared options are spelled and explained the same in every command, old
spellings still work with a warning, and every usage error exits with status 2."""

from __future__ import annotations

import argparse

import pytest

from impure.cli import build_parser, main
from impure.cli import options as shared

COMMANDS = ("convert-reference", "purify", "train", "make-adversarial", "evaluate", "export", "demo", "app")
# option -> the commands that must have it; the help each shows must be the same everywhere (the output's
# starts the same way and then says what the command writes).
SHARED = {
    "--device": ("purify", "make-adversarial", "evaluate", "demo"),
    "--seed": ("purify", "make-adversarial", "evaluate", "demo"),
    "--no-progress": ("purify", "make-adversarial", "evaluate", "demo"),
    "-o/--output": ("purify", "make-adversarial", "evaluate", "export", "demo"),
    "--eps": ("make-adversarial", "evaluate", "demo"),
    "--classifier-weights": ("make-adversarial", "evaluate", "export"),
    "--purifier": ("purify", "evaluate", "export", "demo"),
    "--strength": ("purify", "evaluate", "export", "demo"),
    "--noise-t": ("purify", "evaluate", "export", "demo"),
    "--dtype": ("purify", "evaluate"),
}


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {"/".join(a.option_strings): a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS}


def test_the_command_list_is_complete():
    assert tuple(_subparsers()) == COMMANDS


@pytest.mark.parametrize("option", list(SHARED))
def test_shared_options_are_spelled_and_explained_the_same(option, capsys):
    parsers = _subparsers()
    helps = {}
    for command in SHARED[option]:
        actions = _options(parsers[command])
        assert option in actions, f"`impure {command}` lacks {option}; it has {sorted(actions)}"
        helps[command] = actions[option].help.split(" (default")[0].split("; default")[0]
        with pytest.raises(SystemExit) as caught:
            main([command, "--help"])
        assert caught.value.code == 0 and option.split("/")[-1] in capsys.readouterr().out
    if option == "-o/--output":
        assert all(text.startswith("where to write: ") for text in helps.values()), helps
    elif option == "--purifier":  # evaluate's also takes the baselines
        assert all(text.startswith(shared.PURIFIER_HELP) or "jpeg" in text for text in helps.values()), helps
    else:
        assert len(set(helps.values())) == 1, helps


@pytest.mark.parametrize("argv,message", [
    (["purify", "x.png", "-o", "out", "--noise-t", "-10/20"], "noise timesteps must be whole numbers from 0"),
    (["purify", "x.png", "-o", "out", "--strength", "-1"], "strength must be positive, got -1"),
    (["purify", "x.png", "-o", "out", "--strength", "2", "--noise-t", "80/120"], "--strength or --noise-t, not both"),
    (["demo", "--eps", "8"], "did you mean 8/255?"),
    (["evaluate", "--classifier", "c", "--data", "d", "--eps", "abc"], "invalid eps 'abc'"),
    (["make-adversarial", "d", "-o", "out", "--classifier", "c", "--eps", "2"], "did you mean 2/255?"),
    (["purify", "x.png"], "the following arguments are required: -o/--output"),
    (["evaluate", "--classifier", "c", "--data", "d", "--bogus"], "unrecognized arguments: --bogus"),
    (["evaluate", "--classifier", "c", "--data", "d", "--strength", "2", "--noise-t", "8/12"], "not both"),
    (["evaluate", "--classifier", "c", "--data", "d", "-o", "r", "--resume", "--force"], "not allowed with"),
])
def test_every_usage_error_exits_2_with_its_message(argv, message, capsys):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_a_large_eps_warns_with_the_usual_range(capsys):
    assert shared.eps_argument("0.5") == 0.5
    assert "is 128/255, above 32/255" in capsys.readouterr().err
    assert shared.eps_argument("8/255") == pytest.approx(8 / 255)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("argv,dest,value", [
    (["evaluate", "--classifier", "c", "--data", "d", "--out", "reports"], "output", "reports"),
    (["make-adversarial", "d", "-o", "o", "--classifier", "c", "--weights", "w.safetensors"], "classifier_weights",
     "w.safetensors"),
])
def test_old_spellings_still_work_with_a_deprecation_warning(argv, dest, value, capsys):
    args = build_parser().parse_args(argv)
    assert str(getattr(args, dest)) == value
    err = capsys.readouterr().err
    assert f"{argv[-2]} is deprecated" in err and "next release" in err
