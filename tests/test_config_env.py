"""A configuration error names the environment variable the user set, never the model field or
the value (some are secrets)."""

from __future__ import annotations

import pytest

from safety_governor import cli
from safety_governor.config import Settings
from safety_governor.errors import InputError


@pytest.mark.parametrize(
    ("env", "variable", "message"),
    [
        ({"VERIFY_POLL_SECONDS": "abc"}, "VERIFY_POLL_SECONDS", "valid number"),
        ({"SLACK_POLL_SECONDS": "0"}, "SLACK_POLL_SECONDS", "greater than 0"),
        ({"EXECUTOR": "shell"}, "EXECUTOR", "'dry_run' or 'webhook'"),
        ({"FRAMEWORK_API_TIMEOUT": "soon"}, "FRAMEWORK_API_TIMEOUT", "valid number"),
    ],
)
def test_a_bad_setting_names_the_environment_variable_not_the_field(env, variable, message):
    with pytest.raises(InputError) as info:
        Settings.from_env(env)
    text = str(info.value)
    assert text.startswith(f"environment: {variable}: ") and message in text
    assert variable.lower() not in text and "field '" not in text


def test_a_bad_setting_is_one_line_and_exit_2_and_does_not_echo_the_value(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)  # no .env from the working copy
    monkeypatch.setenv("EXECUTOR_WEBHOOK_TIMEOUT", "s3cr3t-looking-value")
    assert cli.main(["approvals", "list", "--store", str(tmp_path / "g.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: environment: EXECUTOR_WEBHOOK_TIMEOUT: ") and "\n" not in err
    assert "s3cr3t" not in err
