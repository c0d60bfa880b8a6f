"""The `.avsc` files: parseable, documented, evolvable, and exactly the agreed contract."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import avro.schema
import fastavro
import pytest

from devline.errors import SchemaError
from schemas import NAMESPACE, SCHEMA_DIR, load_schema, load_schemas, read_schema, snake_case
from schemas.codec import Codec, plain_schema

# The contract other code is written against: fields in order, `T?` = ["null", T] with
# default null, `[T]` array, `{T}` map of T, `ts` = long/timestamp-millis, `=x` a default.
CONTRACT = {
    "PlanSubmitted": "plan_id:string project:string name:string files:[PlanFile] "
    "options:{string}={} submitted_at:ts submitted_by:string?",
    "PlanFile": "path:string language:string? description:string='' depends_on:[string]=[] "
    "content:string? cost:double? executor:string? simulate:Simulate?",
    "Simulate": "duration_s:double=0.0 fail_first:int=0 fail_error:string='simulated failure' "
    "retryable:boolean=True",
    "PlanAccepted": "plan_id:string project:string name:string tasks:[TaskSpec] "
    "critical_path:[string] levels:[[string]] inferred_edges:int=0 options:{string}={} "
    "accepted_at:ts",
    "TaskSpec": "task_id:string path:string language:string? description:string='' "
    "depends_on:[string]=[] content:string? cost:double priority:double level:int "
    "executor:string simulate:Simulate?",
    "PlanRejected": "plan_id:string reason:string field:string? cycle:[string]=[] rejected_at:ts",
    "PlanCompleted": "plan_id:string files:int executor_runs:int cache_hits:int failed:int=0 "
    "makespan_ms:long completed_at:ts",
    "BoardEntry": "plan_id:string task_id:string seq:long status:string path:string "
    "project:string='' kind:string priority:double attempt:int executor:string "
    "dispatch_id:string='' worker_id:string='' outcome:string? retry_after_s:double? "
    "budgeted:boolean=False at:ts",
    "BreakerState": "executor:string state:string at:ts",
    "PlanRetired": "event_id:string plan_id:string status:string finished_at:ts retired_at:ts",
    "TaskReady": "event_id:string plan_id:string task_id:string path:string kind:string "
    "attempt:int priority:double cache_key:string ready_at:ts",
    "TaskDispatched": "event_id:string plan_id:string task_id:string path:string kind:string "
    "attempt:int worker_id:string partition:int dispatch_id:string dispatched_at:ts",
    "WorkItem": "plan_id:string task_id:string path:string language:string? "
    "description:string='' content:string? executor:string attempt:int kind:string "
    "priority:double cache_key:string dispatch_id:string worker_id:string='' "
    "simulate:Simulate? context:[DepContext]=[] options:{string}={} dispatched_at:ts",
    "DepContext": "path:string content_hash:string content:string? interface:string?",
    "TaskCompleted": "event_id:string plan_id:string task_id:string path:string attempt:int "
    "worker_id:string dispatch_id:string executor:string cache_key:string content:string? "
    "content_hash:string size:long cached:boolean=False started_at:ts finished_at:ts "
    "tokens:long? cost:double?",
    "TaskFailed": "event_id:string plan_id:string task_id:string path:string attempt:int "
    "worker_id:string dispatch_id:string executor:string error:string error_type:string "
    "retryable:boolean fingerprint:string output:string? retry_after_s:double? "
    "started_at:ts finished_at:ts",
    "TaskRetryScheduled": "event_id:string plan_id:string task_id:string path:string "
    "attempt:int delay_ms:long due_at:ts reason:string",
    "TaskDeadLettered": "event_id:string plan_id:string task_id:string path:string "
    "attempts:int reason:string fingerprint:string at:ts",
    "TaskRedriveRequested": "event_id:string plan_id:string task_id:string attempt:int? "
    "dlq_partition:int? dlq_offset:long? requested_by:string='' at:ts",
    "QAResult": "event_id:string plan_id:string task_id:string path:string passed:boolean "
    "checks:[QACheck] at:ts",
    "QACheck": "name:string passed:boolean message:string=''",
    "Escalation": "event_id:string plan_id:string task_id:string? kind:string reason:string "
    "attempts:int=0 errors:[string]=[] last_output:string? at:ts",
    "MetricPoint": "source:string name:string value:double labels:{string}={} at:ts",
    "MetricAggregate": "key:string metric:string dims:{string}={} window_start:ts "
    "window_size_ms:long count:long sum:double min:double max:double p50:double p95:double "
    "p99:double sketch:string",
    "WorkerHeartbeat": "worker_id:string host:string pid:int state:string capacity:int "
    "running:[string]=[] partitions:[int]=[] at:ts",
    "CircuitTransition": "event_id:string breaker:string from_state:string to_state:string "
    "reason:string error_rate:double calls:int at:ts",
    "IntegrationResult": "event_id:string plan_id:string run_id:string shard:int shards:int "
    "passed:boolean failed_tests:[string]=[] implicated_files:[string]=[] duration_ms:long at:ts",
    "DeploymentEvent": "event_id:string plan_id:string deployment_id:string stage_percent:int "
    "status:string analysis:string? at:ts",
    "OpsDecision": "decision_id:string plan_id:string? action:string reason:string "
    "params:{string}={} at:ts",
    "QAReport": "chain:string passed:boolean duration_ms:long fingerprint:string "
    "checks:[QAReportCheck]",
    "QAReportCheck": "name:string status:string blocking:boolean command:string "
    "duration_ms:long findings:int introduced:int reason:string='' output:string='' "
    "lines:[[int]]=[] attributed:[string]=[]",
    "FixBrief": "base_hash:string check:string command:string summary:string output:string "
    "lines:[[int]]=[] fix_attempt:int reverted:boolean=False history:[string]=[]",
    "QASpec": "chain:string previous_hash:string? files:[QAFile]=[]",
    "QAFile": "path:string content_hash:string",
    "IntegrationStarted": "event_id:string plan_id:string run_id:string round:int "
    "scope:string project:string files_ref:string tests_total:int shards:[ShardAssignment] "
    "at:ts",
    "ShardAssignment": "index:int tests:[string] expected_s:double",
    "TestShard": "event_id:string plan_id:string run_id:string round:int shard:int shards:int "
    "tests:[string] project:string files_ref:string sent_at:ts",
    "TestFailure": "test_id:string message:string output:string files:[string]",
    "RolloutStarted": "event_id:string plan_id:string revision:string stable_revision:string? "
    "spec_json:string options:{string}={} manifest:{string}={} at:ts",
    "RolloutFixRequested": "event_id:string plan_id:string revision:string "
    "stable_revision:string? run:string paths:[string] reason:string evidence:string at:ts",
    "RolloutDeployDone": "event_id:string plan_id:string run:string step:int weight:int "
    "rollback:int? target:string='' at:ts",
    "RolloutDeployFailed": "event_id:string plan_id:string run:string step:int weight:int "
    "rollback:int? reason:string target:string='' at:ts",
    "RolloutAnalysisMeasured": "event_id:string plan_id:string run:string step:int round:int "
    "metric:string measurement:RolloutMeasurement source:string='' at:ts",
    "RolloutMeasurement": "value:double? samples:long=0 error:string?",
    "RolloutComparisonMeasured": "event_id:string plan_id:string run:string step:int "
    "samples:[RolloutSamples] at:ts",
    "RolloutSamples": "metric:string canary:[double]=[] stable:[double]=[]",
    "RolloutTimerFired": "event_id:string plan_id:string run:string kind:string due_at:ts at:ts",
    "RolloutControl": "event_id:string plan_id:string action:string by:string reason:string? "
    "at:ts",
    "RolloutSuperseded": "event_id:string plan_id:string new_revision:string at:ts",
    "RolloutAction": "event_id:string plan_id:string kind:string run:string? data_json:string "
    "outcome:string? at:ts",
}
NESTED = {"PlanFile", "Simulate", "TaskSpec", "DepContext", "QACheck", "QAReport",
          "QAReportCheck", "FixBrief", "QASpec", "QAFile", "ShardAssignment", "TestFailure",
          "RolloutMeasurement", "RolloutSamples"}
EVENT_TYPES = sorted(set(CONTRACT) - NESTED)
SCHEMAS = load_schemas()


def _type_sig(schema: Any, records: dict[str, list[dict[str, Any]]]) -> str:
    """Compact notation of a field type; nested records are collected into `records`."""
    if isinstance(schema, str):
        return schema.rpartition(".")[2]
    if isinstance(schema, list):
        assert len(schema) == 2 and schema[0] == "null", f"unexpected union {schema}"
        return _type_sig(schema[1], records) + "?"
    if schema.get("logicalType") == "timestamp-millis":
        assert schema["type"] == "long"
        return "ts"
    kind = schema["type"]
    if kind == "array":
        return f"[{_type_sig(schema['items'], records)}]"
    if kind == "map":
        return "{" + _type_sig(schema["values"], records) + "}"
    if kind == "record":
        records[schema["name"]] = schema["fields"]
        return str(schema["name"])
    return str(kind)


def _field_sig(field: dict[str, Any], records: dict[str, list[dict[str, Any]]]) -> str:
    sig = f"{field['name']}:{_type_sig(field['type'], records)}"
    if "default" in field and not sig.endswith("?"):
        sig += f"={field['default']!r}"
    return sig


def _all_records(schema: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    records = {schema["name"]: schema["fields"]}
    pending = [schema["fields"]]
    while pending:
        for field in pending.pop():
            found: dict[str, list[dict[str, Any]]] = {}
            _type_sig(field["type"], found)
            for name, fields in found.items():
                if name not in records:
                    records[name] = fields
                    pending.append(fields)
    return records


def _walk_types(schema: Any) -> list[dict[str, Any]]:
    """Every dict-shaped type in `schema` (records, arrays, maps, annotated primitives)."""
    out: list[dict[str, Any]] = []
    if isinstance(schema, list):
        for branch in schema:
            out += _walk_types(branch)
    elif isinstance(schema, dict):
        out.append(schema)
        for key in ("items", "values"):
            if key in schema:
                out += _walk_types(schema[key])
        for field in schema.get("fields", []):
            out += _walk_types(field["type"])
    return out


def test_every_event_type_has_exactly_one_file() -> None:
    assert sorted(SCHEMAS) == EVENT_TYPES
    files = sorted(p.stem for p in SCHEMA_DIR.glob("*.avsc"))
    assert files == sorted(snake_case(name) for name in EVENT_TYPES)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_schema_parses_and_is_named_after_its_file(event_type: str) -> None:
    schema = load_schema(event_type)
    assert schema["namespace"] == NAMESPACE
    assert snake_case(event_type) + ".avsc" == f"{snake_case(schema['name'])}.avsc"
    fastavro.parse_schema(schema)  # fastavro accepts it on its own (nested types inline)
    parsed = avro.schema.parse(json.dumps(schema))  # and so does the reference implementation
    assert isinstance(parsed, avro.schema.RecordSchema)
    assert parsed.fullname == f"{NAMESPACE}.{event_type}"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_fields_match_the_contract(event_type: str) -> None:
    for name, fields in _all_records(SCHEMAS[event_type]).items():
        expected = re.findall(r"\S+='[^']*'|\S+", CONTRACT[name])
        actual = [_field_sig(field, {}) for field in fields]
        assert actual[: len(expected)] == expected, name
        for field in fields[len(expected) :]:  # additions must keep old readers working
            assert "default" in field, f"{name}.{field['name']} was added without a default"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_record_and_field_has_a_doc(event_type: str) -> None:
    for item in _walk_types(SCHEMAS[event_type]):
        if item.get("type") == "record":
            assert item.get("doc", "").strip(), f"record {item['name']} has no doc"
            for field in item["fields"]:
                assert field.get("doc", "").strip(), f"{item['name']}.{field['name']} has no doc"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_nullable_fields_default_to_null_and_timestamps_are_millis(event_type: str) -> None:
    for item in _walk_types(SCHEMAS[event_type]):
        for field in item.get("fields", []):
            where = f"{item['name']}.{field['name']}"
            kind = field["type"]
            if isinstance(kind, list):
                assert kind[0] == "null" and field.get("default", "missing") is None, where
            if field["name"] == "at" or field["name"].endswith("_at"):
                assert kind == {"type": "long", "logicalType": "timestamp-millis"}, where


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_defaults_are_valid_values(event_type: str) -> None:
    codec = Codec()
    for item in _walk_types(SCHEMAS[event_type]):
        for field in item.get("fields", []):
            if "default" in field:
                wrapper = {"type": "record", "name": "D", "fields": [{**field, "doc": "d"}]}
                fastavro.validation.validate(
                    {field["name"]: field["default"]}, fastavro.parse_schema(wrapper)
                )
    assert codec.schema(event_type)["name"] == f"{NAMESPACE}.{event_type}"


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_fingerprint_matches_the_reference_implementation(event_type: str) -> None:
    # avro-python keeps {"type": "long"} for annotated primitives in its canonical form,
    # against the spec's [PRIMITIVES] rule (Java and fastavro write "long"), so compare on
    # the schema without logical types, whose canonical form is the same by that rule.
    reference = avro.schema.parse(json.dumps(plain_schema(SCHEMAS[event_type])))
    assert Codec().fingerprint(event_type) == reference.fingerprint("CRC-64-AVRO")


def test_known_crc64_avro_vector() -> None:
    # Fingerprint of the schema "int" (Avro specification test vectors, little-endian bytes).
    assert fastavro.schema.fingerprint('"int"', "CRC-64-AVRO") == "8f5c393f1ad57572"


def test_loader_rejects_misnamed_or_foreign_files(tmp_path: Path) -> None:
    good = json.loads((SCHEMA_DIR / "metric_point.avsc").read_text())
    (tmp_path / "metric.avsc").write_text(json.dumps(good))
    with pytest.raises(SchemaError, match=r"expected file metric_point\.avsc"):
        read_schema(tmp_path / "metric.avsc")
    (tmp_path / "metric_point.avsc").write_text(json.dumps({**good, "namespace": "other"}))
    with pytest.raises(SchemaError, match="namespace"):
        read_schema(tmp_path / "metric_point.avsc")
    (tmp_path / "broken.avsc").write_text("{not json")
    with pytest.raises(SchemaError, match="cannot read"):
        read_schema(tmp_path / "broken.avsc")
    with pytest.raises(SchemaError, match="unknown event type"):
        load_schema("NoSuchEvent")


def test_snake_case() -> None:
    assert snake_case("PlanSubmitted") == "plan_submitted"
    assert snake_case("QAResult") == "qa_result"
    assert snake_case("TaskRetryScheduled") == "task_retry_scheduled"
