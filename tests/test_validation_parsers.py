"""The validations' judges read the tools' real output, as different releases print it."""

import json

from stackreflex.validations import Limits, Seen, builtin, parsers

PCS_1_1 = """Cluster name: tripleo_cluster
Stack: corosync
Current DC: overcloud-controller-1 (version 1.1.18-11.el7_5.3-2b07d5c5a9) - partition with quorum
Last updated: Tue Dec  1 10:00:00 2026
Last change: Tue Dec  1 09:00:00 2026 by root via cibadmin on overcloud-controller-0

3 nodes configured
19 resources configured

Online: [ overcloud-controller-0 overcloud-controller-1 overcloud-controller-2 ]

Full list of resources:

 ip-172.16.2.9\t(ocf::heartbeat:IPaddr2):\tStarted overcloud-controller-0
 Clone Set: haproxy-clone [haproxy]
     Started: [ overcloud-controller-0 overcloud-controller-1 ]
     Stopped: [ overcloud-controller-2 ]
 Master/Slave Set: galera-master [galera]
     Masters: [ overcloud-controller-0 overcloud-controller-1 overcloud-controller-2 ]
 openstack-cinder-volume\t(systemd:openstack-cinder-volume):\tStarted overcloud-controller-0

Failed Actions:
* haproxy_start_0 on overcloud-controller-2 'unknown error' (1): call=55, status=complete, exitreason='none',
    last-rc-change='Tue Dec  1 09:30:00 2026', queued=0ms, exec=2031ms

Daemon Status:
  corosync: active/enabled
  pacemaker: active/enabled
  pcsd: active/enabled
"""

PCS_2_HEALTHY_BUT_ONE_OFFLINE = """Cluster name: tripleo_cluster
Cluster Summary:
  * Stack: corosync
  * Current DC: overcloud-controller-0 (version 2.1.5-9.el9_2-a3f44794f94) - partition with quorum
  * 3 nodes configured

Node List:
  * Online: [ overcloud-controller-0 overcloud-controller-1 ]
  * OFFLINE: [ overcloud-controller-2 ]

Full List of Resources:
  * Clone Set: haproxy-clone [haproxy]:
    * Started: [ overcloud-controller-0 overcloud-controller-1 ]
    * Stopped: [ overcloud-controller-2 ]

Daemon Status:
  corosync: active/enabled
  pacemaker: active/enabled
  pcsd: active/enabled
"""


def seen(stdout: str, status: int = 0, stderr: str = "") -> Seen:
    return Seen("overcloud-controller-0", "ControllerDeployedServer", "", status, stdout, stderr)


def test_pacemaker_1_1_a_clone_stopped_on_an_online_node_and_a_failed_action_fail():
    status = parsers.pcs_status(PCS_1_1)
    assert status.online == ["overcloud-controller-0", "overcloud-controller-1", "overcloud-controller-2"]
    assert status.not_started == ["Stopped: [ overcloud-controller-2 ]"]
    assert status.failed_actions == [
        "haproxy_start_0 on overcloud-controller-2 'unknown error' (1): call=55, status=complete, exitreason='none',"
    ]
    verdict = builtin.judge_pacemaker(seen(PCS_1_1), Limits(controllers=3))
    assert verdict.verdict == "fail" and "haproxy_start_0" in verdict.reason


def test_pacemaker_2_an_offline_node_fails_once_and_its_stopped_clone_is_not_a_second_problem():
    status = parsers.pcs_status(PCS_2_HEALTHY_BUT_ONE_OFFLINE)
    assert status.offline == ["overcloud-controller-2"] and status.not_started == []
    verdict = builtin.judge_pacemaker(seen(PCS_2_HEALTHY_BUT_ONE_OFFLINE), Limits(controllers=3))
    assert verdict.verdict == "fail" and verdict.reason.startswith("offline: overcloud-controller-2")


def test_ceph_jewel_overall_status_is_read():
    jewel = json.dumps({"health": {"overall_status": "HEALTH_WARN", "summary": [], "checks": {}}})
    assert builtin.judge_ceph_health(seen(jewel), Limits()).verdict == "warn"


def test_sudo_s_command_not_found_is_a_missing_tool_and_ceph_is_skipped():
    missing = seen("", 1, "sudo: ceph: command not found\n")
    assert missing.missing_tool and builtin.judge_ceph_health(missing, Limits()).verdict == "skipped"


def test_df_still_judges_the_mounts_it_listed_when_one_cannot_be_read():
    out = (
        "Filesystem 1-blocks Used Available Capacity Mounted on\n/dev/vda2 100000000000 95000000000 5000000000 95% /\n"
    )
    verdict = builtin.judge_disk_space(seen(out, 1, "df: /mnt/nfs: Stale file handle\n"), Limits())
    assert verdict.verdict == "fail" and "/ 5% free" in verdict.seen


def test_a_package_below_the_runbook_s_minimum_fails_even_when_every_node_has_it():
    rpm = "openvswitch 2.6.1-10.git20161206.el7fdp\nkernel 3.10.0-862.el7\nqemu-kvm-rhev 2.12.0-18.el7\n"
    verdicts = builtin.judge_packages({n: Seen(n, "Compute", "", 1, rpm) for n in ("c0", "c1")}, Limits())
    assert {v.verdict for v in verdicts.values()} == {"fail"}
    assert "openvswitch 2.6.1" in verdicts["c0"].seen


def test_an_unreadable_answer_quotes_stderr_never_stdout():
    verdict = builtin.judge_haproxy(seen("listen haproxy.stats\n  stats auth admin:s3cret\n", 1, ""), Limits())
    assert "s3cret" not in verdict.reason + verdict.seen
