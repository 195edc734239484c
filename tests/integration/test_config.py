"""Configuration: Kafka property names, --print-config, --config FILE,
--override, refusal of unknown keys and malformed values, a stable cluster id."""

from __future__ import annotations

import kafka

import kclients as kc
from harness import free_port, run_felice, unique, wait_until
from kclients import Rec


def parse_config(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f"--print-config line is not key=value: {line!r}"
        key, _, value = line.partition("=")
        out[key.strip()] = value.strip()
    return out


def test_print_config_shows_defaults(tmp_path):
    res = run_felice(["server", "--print-config"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = parse_config(res.stdout)
    assert cfg.get("listeners") == "PLAINTEXT://127.0.0.1:9092"
    assert cfg.get("log.dirs") == "./data", \
        f"the effective data folder is not shown as log.dirs=./data (log.dirs={cfg.get('log.dirs')!r}, " \
        f"log.dir={cfg.get('log.dir')!r})"
    assert cfg.get("num.partitions") == "1"
    assert cfg.get("message.max.bytes") == "1048588"
    assert cfg.get("auto.create.topics.enable") == "true"
    assert not (tmp_path / "data").exists(), "--print-config created the data folder"


def test_print_config_shows_overrides(tmp_path):
    res = run_felice(["server", "--print-config", "--override", "num.partitions=7",
                      "--override", "message.max.bytes=2000000",
                      "--override", "listeners=PLAINTEXT://127.0.0.1:19092",
                      "--override", "auto.create.topics.enable=false",
                      "--override", "log.dirs=/srv/felice-data"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = parse_config(res.stdout)
    assert cfg["num.partitions"] == "7"
    assert cfg["message.max.bytes"] == "2000000"
    assert cfg["listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert cfg["auto.create.topics.enable"] == "false"
    assert cfg["log.dirs"] == "/srv/felice-data"


def test_config_file_is_honoured_and_overrides_win(tmp_path, make_broker):
    port = free_port()
    data = tmp_path / "from-file-data"
    props = tmp_path / "server.properties"
    props.write_text("# a Kafka-style properties file\n"
                     f"listeners=PLAINTEXT://127.0.0.1:{port}\n"
                     f"log.dirs={data}\n"
                     "\n"
                     "num.partitions=4\n"
                     "message.max.bytes=2000000\n")
    res = run_felice(["server", "--config", str(props), "--print-config"], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    cfg = parse_config(res.stdout)
    assert cfg["num.partitions"] == "4" and cfg["message.max.bytes"] == "2000000"
    assert cfg["listeners"] == f"PLAINTEXT://127.0.0.1:{port}" and cfg["log.dirs"] == str(data)

    res = run_felice(["server", "--config", str(props), "--override", "num.partitions=2", "--print-config"],
                     cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert parse_config(res.stdout)["num.partitions"] == "2", "--override must win over the --config file"

    # a broker started from the file alone listens where the file says, stores where it says,
    # and auto-creates topics with its num.partitions
    b = make_broker(config_file=props, address_from_config=True, port=port)
    topic = unique("from-file")
    producer = kafka.KafkaProducer(bootstrap_servers=b.bootstrap)
    try:
        md = producer.send(topic, value=b"hello").get(timeout=30)
        assert md.offset == 0
        first_partition = md.partition
    finally:
        producer.close(timeout=10)
    kc.wait_for_topic(b.bootstrap, topic, 4)
    assert data.exists() and any(data.iterdir()), f"nothing was written under log.dirs={data}"
    # message.max.bytes=2000000 from the file: a 1.5 MB record (over the default limit) is taken
    big = b"z" * 1_500_000
    delivered = kc.produce_confluent(b.bootstrap, topic, [Rec(value=big, partition=(first_partition + 1) % 4)],
                                     config={"message.max.bytes": 10_000_000})
    assert delivered[0].offset == 0


def _start_must_fail(tmp_path, override: str) -> str:
    port = free_port()
    res = run_felice(["server", "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
                      "--override", f"log.dirs={tmp_path / 'data'}", "--override", override], cwd=tmp_path)
    assert res.returncode != 0, f"`--override {override}` was accepted:\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def test_unknown_key_fails_the_start(tmp_path):
    message = _start_must_fail(tmp_path, "no.such.setting=1")
    assert "no.such.setting" in message, f"the error does not name the key:\n{message}"


def test_malformed_value_fails_the_start(tmp_path):
    message = _start_must_fail(tmp_path, "num.partitions=abc")
    assert "num.partitions" in message, f"the error does not name the key:\n{message}"


def test_malformed_boolean_fails_the_start(tmp_path):
    message = _start_must_fail(tmp_path, "auto.create.topics.enable=maybe")
    assert "auto.create.topics.enable" in message, f"the error does not name the key:\n{message}"


def test_unknown_key_in_config_file_fails_the_start(tmp_path):
    props = tmp_path / "bad.properties"
    props.write_text("num.partitions=1\nthis.is.not.kafka=true\n")
    port = free_port()
    res = run_felice(["server", "--config", str(props), "--override", f"listeners=PLAINTEXT://127.0.0.1:{port}",
                      "--override", f"log.dirs={tmp_path / 'data'}"], cwd=tmp_path)
    assert res.returncode != 0, "an unknown key in the --config file was accepted"
    assert "this.is.not.kafka" in res.stdout + res.stderr


def test_log_names_the_listening_address(broker):
    # The broker may answer its first request before the log line reaches
    # the file: wait for it, with a bound.
    wait_until(lambda: f"listening on 127.0.0.1:{broker.port}" in broker.log_text(), 10,
               "the listening address in the broker log")


def test_cluster_id_is_stable_across_restarts(broker):
    a = kc.admin(broker.bootstrap)
    before = a.list_topics(timeout=10).cluster_id
    assert before, "metadata carries no cluster id"
    described = a.describe_cluster(request_timeout=15).result(timeout=30)
    assert described.cluster_id == before
    broker.restart()
    after = kc.admin(broker.bootstrap).list_topics(timeout=10).cluster_id
    assert after == before, f"cluster id changed across a restart: {before} -> {after}"
    broker.restart(hard=True)
    after_crash = kc.admin(broker.bootstrap).list_topics(timeout=10).cluster_id
    assert after_crash == before, f"cluster id changed across a kill -9: {before} -> {after_crash}"
