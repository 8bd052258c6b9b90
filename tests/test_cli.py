import pytest

from experiments.cli import main


def test_models_lists_names_counts_and_sources(capsys):
    assert main(["models", "resnet2*"]) == 0
    out = capsys.readouterr().out
    assert "| resnet20 | 0.272M | code | RN (003) |" in out


def test_models_with_an_unmatched_pattern_names_the_registered_ones(capsys):
    assert main(["models", "vgg*"]) == 2
    err = capsys.readouterr().err
    assert "no registered model matches 'vgg*'; registered models: a_resnest110" in err


def test_claims_lists_the_registry_and_rejects_unknown_papers(capsys):
    assert main(["claims", "--paper", "ND"]) == 0
    out = capsys.readouterr().out
    assert "| ND-table2 | numeric | reproduce:nd-table2 |" in out and "RN-T1" not in out
    assert main(["claims", "--paper", "XX"]) == 2
    assert "--paper must be one of 'NRL', 'ND', 'OAI', 'RN', 'IM'; got 'XX'" in capsys.readouterr().err


def test_unknown_command_exits_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2
