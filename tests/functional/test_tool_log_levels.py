"""The dev tools' console scripts read SCEP_SERVER_LOG_LEVEL: an unknown level is one line and exit 2, an
empty one counts as unset (INFO), as for scep-server itself."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

import pytest

from scep_server.emulator import cli as emulator_cli
from scep_server.simulator import cli as simulator_cli

Main = Callable[[Sequence[str] | None], int]
TOOLS: list[tuple[str, Main]] = [("scep-intune-emulator", emulator_cli.main), ("scep-simulator", simulator_cli.main)]


@pytest.mark.parametrize(("prog", "main"), TOOLS, ids=[prog for prog, _ in TOOLS])
def test_an_unknown_level_is_one_line_and_exit_2(
    prog: str, main: Main, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCEP_SERVER_LOG_LEVEL", "LOUD")
    assert main(["--help"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"{prog}: SCEP_SERVER_LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, "
                                "CRITICAL, not 'LOUD'"]


@pytest.mark.parametrize("module", [emulator_cli, simulator_cli], ids=["scep-intune-emulator", "scep-simulator"])
def test_an_empty_level_is_info(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCEP_SERVER_LOG_LEVEL", "")
    levels: list[str] = []
    monkeypatch.setattr(module, "configure_logging", levels.append)
    with pytest.raises(SystemExit) as exited:  # argparse's --help
        module.main(["--help"])
    assert exited.value.code == 0 and levels == ["INFO"]
