"""The SSH launcher refuses a loopback controller up front when a host is another machine
(as the batch launchers do), and accepts it when every host is this machine."""

from __future__ import annotations

import os

import pytest
from systems import require_system

from hpcpar.config import ConfigError, load_config
from hpcpar.launchers.build import check_network

SSH_CONFIG = os.environ.get("HPCPAR_SSH_CONFIG", "/opt/hpcpar-ssh/ssh_config")


def ssh_config(hosts: dict[str, int], **extra) -> object:
    return load_config(overrides={"cluster.engines": "ssh", "ssh.hosts": hosts, "ssh.config": SSH_CONFIG, **extra})


def test_a_host_elsewhere_with_a_loopback_controller_is_refused_naming_the_fix() -> None:
    with pytest.raises(ConfigError) as e:
        check_network(ssh_config({"localhost": 1, "node7.invalid": 2}))
    text = str(e.value)
    assert "node7.invalid" in text and "localhost," not in text
    assert "controller.ip is '127.0.0.1'" in text and "--ip '*'" in text


def test_hosts_on_this_machine_may_use_a_loopback_controller() -> None:
    check_network(ssh_config({"localhost": 1, "127.0.0.1:2222": 1}))


def test_an_alias_is_resolved_through_the_ssh_config() -> None:
    """testhost is an alias for 127.0.0.1 in the CI ssh_config: this machine."""
    require_system("ssh")
    check_network(ssh_config({"testhost": 2}))


def test_a_reachable_listen_address_is_fine_for_any_host() -> None:
    check_network(ssh_config({"node7.invalid": 2}, **{"controller.ip": "*"}))
