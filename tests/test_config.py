"""Configuration: environment over config files, the Azure settings, secrets kept out of output."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

import metaverse_kit as mk
from metaverse_kit.config import (
    AzureSettings,
    azure_settings,
    config_files,
    default_backend,
    default_workspace_path,
    read_config_file,
)
from metaverse_kit.redact import get_logger, redact

CONFIG = """
backend = "azure"

[azure]
fully_qualified_namespace = "ehns-file.servicebus.windows.net"
eventhub = "eh-file"
schema_group = "group-file"
lake = "abfss://main@acct.dfs.core.windows.net/"
schemas = ["a.B", "c.D"]
"""
EH_KEY = "aGVsbG8td29ybGQta2V5LXRoYXQtaXMtbm90LXJlYWw="
EH_CONN = (
    "Endpoint=sb://ehns-env.servicebus.windows.net/;SharedAccessKeyName=send;"
    f"SharedAccessKey={EH_KEY};EntityPath=eh-env"
)
ST_KEY = "c3RvcmFnZS1rZXktdGhhdC1pcy1ub3QtcmVhbC0xMjM0NTY3ODkw"


def test_nothing_configured_means_local(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert default_backend(env) == "local"
    assert default_workspace_path(env) == Path(".metaverse")
    assert azure_settings(env) == AzureSettings()


def test_the_user_config_file_then_the_workspace_one_then_the_environment(tmp_path: Path) -> None:
    user = tmp_path / "home" / ".config" / "metaverse" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text(CONFIG)
    env = {"HOME": str(tmp_path / "home"), "METAVERSE_HOME": str(tmp_path / "ws")}
    assert default_backend(env) == "azure"
    s = azure_settings(env)
    assert s.fully_qualified_namespace == "ehns-file.servicebus.windows.net"
    assert (s.eventhub, s.schema_group, s.schemas) == ("eh-file", "group-file", ("a.B", "c.D"))
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "config.toml").write_text('[azure]\neventhub = "eh-workspace"\n')
    assert azure_settings(env).eventhub == "eh-workspace"
    assert azure_settings(env).schema_group == "group-file"
    env |= {"EVENTHUB": "eh-legacy", "METAVERSE_SCHEMAS": "x.Y"}
    assert azure_settings(env).eventhub == "eh-legacy"
    assert azure_settings(env).schemas == ("x.Y",)
    env |= {"METAVERSE_EVENTHUB": "eh-env", "METAVERSE_BACKEND": "local"}
    assert azure_settings(env).eventhub == "eh-env"
    assert default_backend(env) == "local"
    # XDG_CONFIG_HOME and METAVERSE_CONFIG move the file.
    assert config_files({"XDG_CONFIG_HOME": "/x", "HOME": "/h"})[1] == Path(
        "/x/metaverse/config.toml"
    )
    assert config_files({"METAVERSE_CONFIG": str(user)}) == [user]


def test_config_files_refuse_secrets_unknown_keys_and_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[azure]\nconnection_string = "{EH_CONN}"\n')
    with pytest.raises(mk.ConfigurationError, match="secrets do not belong") as info:
        read_config_file(path)
    assert EH_KEY.rstrip("=") not in str(info.value)
    path.write_text('[azure]\ncolour = "blue"\n')
    with pytest.raises(mk.ConfigurationError, match=r"azure\.colour"):
        read_config_file(path)
    path.write_text("backend = \n")
    with pytest.raises(mk.ConfigurationError, match="not valid TOML"):
        read_config_file(path)
    assert read_config_file(tmp_path / "missing.toml") == {}


def test_connection_strings_come_from_the_environment_and_stay_out_of_reprs() -> None:
    env = {"CONNECTION_STRING": EH_CONN, "AZURE_STORAGE_CONNECTION_STRING": "AccountKey=" + ST_KEY}
    s = azure_settings(env)
    assert s.connection_string == EH_CONN
    assert EH_KEY not in repr(s) and ST_KEY not in repr(s)


def test_connect_azure_from_the_environment_names_where_and_hides_the_key(tmp_path: Path) -> None:
    os.environ.update(
        {
            "METAVERSE_BACKEND": "azure",
            "METAVERSE_HOME": str(tmp_path / "state"),
            "METAVERSE_CONFIG": str(tmp_path / "none.toml"),
            "CONNECTION_STRING": EH_CONN,
        }
    )
    with mk.connect() as ws:
        assert ws.backend == "azure"
        text = repr(ws)
        assert "namespace='ehns-env.servicebus.windows.net'" in text
        assert "eventhub='eh-env'" in text
        assert EH_KEY not in text and "SharedAccessKey" not in text
        assert ws.path is not None and ws.path.is_relative_to(tmp_path / "state")
        with pytest.raises(mk.ConfigurationError, match="No Capture lake is configured"):
            ws.replay()


def test_connect_azure_without_a_namespace_says_what_to_set(tmp_path: Path) -> None:
    os.environ["METAVERSE_CONFIG"] = str(tmp_path / "none.toml")
    with pytest.raises(mk.ConfigurationError, match="METAVERSE_NAMESPACE"):
        mk.connect("azure", path=tmp_path)


def test_a_malformed_connection_string_is_reported_without_it(tmp_path: Path) -> None:
    os.environ["METAVERSE_CONFIG"] = str(tmp_path / "none.toml")
    os.environ["CONNECTION_STRING"] = f"Endpoint=sb://x/;SharedAccessKey: {EH_KEY.rstrip('=')}"
    with pytest.raises(mk.ConfigurationError, match="malformed") as info:
        mk.connect("azure", path=tmp_path)
    assert EH_KEY.rstrip("=") not in str(info.value)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (EH_CONN, EH_KEY),
        (f"DefaultEndpointsProtocol=https;AccountName=a;AccountKey={ST_KEY};", ST_KEY),
        ("https://a.blob.core.windows.net/c?sv=2022&sig=abc%2Bdef%3D&se=1", "abc%2Bdef%3D"),
        ("Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.eyJhdWQiOiJodHRwczovL2V2.sig", "eyJ0eX"),
        ('{"access_token": "opaque-token-value", "expires_in": 3599}', "opaque-token-value"),
        ("SharedAccessSignature sr=x&sig=s1g&se=1&skn=k", "s1g"),
        ("sas_token=sv2022abcdef", "sv2022abcdef"),
    ],
)
def test_redact_masks_every_kind_of_secret(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out and "***" in out


def test_redact_keeps_where_it_failed() -> None:
    out = redact(EH_CONN)
    assert "ehns-env.servicebus.windows.net" in out and "EntityPath=eh-env" in out
    assert "SharedAccessKeyName=send" in out


def test_log_lines_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    log = get_logger("metaverse_kit.test")
    with caplog.at_level(logging.INFO, logger="metaverse_kit.test"):
        log.info("connecting with %s", EH_CONN)
    assert EH_KEY not in caplog.text and "SharedAccessKey=***" in caplog.text


def test_importing_the_toolkit_and_the_azure_factory_imports_no_azure_sdk() -> None:
    code = (
        "import sys, metaverse_kit, metaverse_kit.backends.azure.factory\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'azure'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_names_from_the_environment_or_a_config_file_follow_azure_rules(tmp_path: Path) -> None:
    from metaverse_kit.config import azure_settings

    with pytest.raises(mk.ConfigurationError, match=r"\$METAVERSE_EVENTHUB.*event hub name"):
        azure_settings({"METAVERSE_EVENTHUB": "..", "METAVERSE_CONFIG": os.devnull})
    with pytest.raises(mk.ConfigurationError, match=r"\$EVENTHUB"):
        azure_settings({"EVENTHUB": "a b", "METAVERSE_CONFIG": os.devnull})
    with pytest.raises(mk.ConfigurationError, match=r"\$METAVERSE_NAMESPACE.*6 to 50"):
        azure_settings(
            {"METAVERSE_NAMESPACE": "ab.servicebus.windows.net", "METAVERSE_CONFIG": os.devnull}
        )
    config = tmp_path / "config.toml"
    config.write_text('[azure]\nschema_group = ".."\n')
    with pytest.raises(mk.ConfigurationError, match=r"azure.schema_group \(in .*config.toml\)"):
        azure_settings({"METAVERSE_CONFIG": str(config)})
