"""`tuneforge models list|prepare` through the console script's main()."""

from __future__ import annotations

import pytest

from tuneforge.cli.main import main


def test_models_list_names_the_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "list"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "minilm-l6-v2" in out


def test_models_prepare_of_an_unknown_name_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "prepare", "no-such-model"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-model" in err and "smollm2-135m-instruct" in err
