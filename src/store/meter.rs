//! The capacity meter: the read and write units every call to the table consumes, per operation
//! and per partition key, computed from item sizes by DynamoDB's rules (Developer Guide, "Item
//! sizes and formats" and "Read/write capacity mode"): a write costs one unit per started KiB of
//! the item (an update, of the larger of its images when the call returns one), a read one unit
//! per started 4 KiB of every item it reads (a query sums them first), half that when eventually
//! consistent; a write to an item in a global secondary index costs the index a write too, two
//! when it moves the item's index key.
//!
//! An SDK interceptor on the store's client feeds it: the request's JSON (items, keys, update
//! expressions) before it is sent, the typed output after it is read. The emulator's own
//! `ConsumedCapacity` is a constant per call whatever the item size, so it is not used.
//!
//! # Caveats
//! - An update whose call returns no image is metered on the key and values it sends: exact for
//!   ferry's small run items, low for a large item.
//! - A query is metered on the items it returns: exact without a projection or filter, low
//!   with one (DynamoDB charges for the whole items read).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::{ConfigBag, Storable, StoreReplace};
use serde_json::Value;

/// Units consumed.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Units {
    pub read: f64,
    pub write: f64,
}

impl std::ops::AddAssign for Units {
    fn add_assign(&mut self, o: Units) {
        self.read += o.read;
        self.write += o.write;
    }
}

/// What the meter has counted so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub total: Units,
    pub calls: u64,
    /// Per operation name: calls and units.
    pub by_operation: HashMap<String, (u64, Units)>,
    /// Per partition key (an index's partition key for index queries).
    pub by_key: HashMap<String, Units>,
}

impl Reading {
    /// The partition key with the most units (reads and writes summed), and its units.
    pub fn hottest(&self) -> Option<(&str, Units)> {
        self.by_key
            .iter()
            .max_by(|a, b| (a.1.read + a.1.write).total_cmp(&(b.1.read + b.1.write)))
            .map(|(k, u)| (k.as_str(), *u))
    }

    /// One line of JSON: totals, per operation, and the ten hottest keys.
    pub fn to_json(&self) -> String {
        let mut keys: Vec<(&String, &Units)> = self.by_key.iter().collect();
        keys.sort_by(|a, b| (b.1.read + b.1.write).total_cmp(&(a.1.read + a.1.write)));
        let keys: serde_json::Map<String, Value> = keys
            .into_iter()
            .take(10)
            .map(|(k, u)| {
                (
                    k.clone(),
                    serde_json::json!({"rru": u.read, "wru": u.write}),
                )
            })
            .collect();
        let ops: serde_json::Map<String, Value> = self
            .by_operation
            .iter()
            .map(|(op, (calls, u))| {
                (
                    op.clone(),
                    serde_json::json!({"calls": calls, "rru": u.read, "wru": u.write}),
                )
            })
            .collect();
        serde_json::json!({
            "calls": self.calls,
            "rru": self.total.read,
            "wru": self.total.write,
            "operations": ops,
            "keys": keys,
        })
        .to_string()
    }
}

/// Counts the units of every call of the client it is installed on (see [`Meter::interceptor`]).
#[derive(Debug, Clone, Default)]
pub struct Meter(Arc<Mutex<Reading>>);

impl Meter {
    pub fn reading(&self) -> Reading {
        self.0.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn record(&self, op: &str, key: &str, units: Units) {
        if let Ok(mut r) = self.0.lock() {
            r.calls += 1;
            r.total += units;
            let e = r.by_operation.entry(op.to_string()).or_default();
            e.0 += 1;
            e.1 += units;
            *r.by_key.entry(key.to_string()).or_default() += units;
        }
    }

    /// The SDK interceptor that feeds this meter.
    pub fn interceptor(&self) -> MeterCalls {
        MeterCalls(self.clone())
    }
}

/// What the request said, kept until its answer is read.
#[derive(Debug, Clone, Default)]
struct Sent {
    key: String,
    /// Units known from the request alone.
    units: Units,
    /// Bytes the request writes (an update's key and values; a put's whole item).
    written: usize,
    /// Index writes the request causes.
    index_writes: f64,
    eventual: bool,
}

impl Storable for Sent {
    type Storer = StoreReplace<Self>;
}

/// The interceptor of [`Meter`].
#[derive(Debug, Clone)]
pub struct MeterCalls(Meter);

const KIB: usize = 1024;

fn write_units(bytes: usize) -> f64 {
    bytes.div_ceil(KIB).max(1) as f64
}

fn read_units(bytes: usize, eventual: bool) -> f64 {
    let units = bytes.div_ceil(4 * KIB).max(1) as f64;
    if eventual { units / 2.0 } else { units }
}

/// Size of an attribute value in DynamoDB's JSON (`{"S": "…"}`, `{"N": "…"}`, …).
fn json_value_size(v: &Value) -> usize {
    let Some((t, inner)) = v.as_object().and_then(|o| o.iter().next()) else {
        return 0;
    };
    match (t.as_str(), inner) {
        ("S", Value::String(s)) => s.len(),
        ("N", Value::String(n)) => number_size(n),
        // Base64 in JSON: the stored bytes are three quarters of it.
        ("B", Value::String(b)) => b.len() * 3 / 4,
        ("BOOL" | "NULL", _) => 1,
        ("SS", Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::len).sum(),
        ("NS", Value::Array(a)) => a.iter().filter_map(Value::as_str).map(number_size).sum(),
        ("L", Value::Array(a)) => 3 + a.iter().map(|x| 1 + json_value_size(x)).sum::<usize>(),
        ("M", Value::Object(m)) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + json_value_size(x))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// A number's size: about one byte per two significant digits, plus one.
fn number_size(n: &str) -> usize {
    let digits = n
        .trim_start_matches(['-', '+'])
        .trim_start_matches(['0', '.'])
        .chars()
        .filter(char::is_ascii_digit)
        .count();
    digits.div_ceil(2) + 1
}

fn json_item_size(item: Option<&Value>) -> usize {
    item.and_then(Value::as_object).map_or(0, |o| {
        o.iter().map(|(k, v)| k.len() + json_value_size(v)).sum()
    })
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => number_size(n),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(a) => a.iter().map(String::len).sum(),
        AttributeValue::Ns(a) => a.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(a) => a.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(a) => 3 + a.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_size(x))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// Size of an item by DynamoDB's rules: attribute names plus values.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// The partition key a request touches: `pk` of its key or item, else the value its key
/// condition compares the hash key with.
fn partition_key(body: &Value) -> String {
    let from = |o: Option<&Value>| {
        o.and_then(|i| i.get("pk").or_else(|| i.get("gsi1pk")))
            .and_then(|v| v.get("S"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if let Some(k) = from(body.get("Key")).or_else(|| from(body.get("Item"))) {
        return k;
    }
    let values = body.get("ExpressionAttributeValues");
    for name in [":pk", ":p"] {
        if let Some(v) = values
            .and_then(|v| v.get(name))
            .and_then(|v| v.get("S"))
            .and_then(Value::as_str)
        {
            return v.to_string();
        }
    }
    String::from("(table)")
}

/// Index writes caused by writing `item` (a put) or by an update expression.
fn index_writes(put: Option<&Value>, update: Option<&str>) -> f64 {
    let mut writes = 0.0;
    if let Some(item) = put {
        for key in ["gsi1pk", "gsi2pk"] {
            if item.get(key).is_some() {
                // gsi1 projects everything, gsi2 only keys: both about a KiB or less here.
                writes += 1.0;
            }
        }
    }
    if let Some(expr) = update {
        if expr.contains("REMOVE") && expr.contains("gsi2pk") {
            writes += 1.0;
        } else if expr.contains("gsi2sk") {
            writes += 2.0;
        }
    }
    writes
}

impl Sent {
    fn of(op: &str, body: &Value) -> Sent {
        let key = partition_key(body);
        let eventual = body.get("ConsistentRead").and_then(Value::as_bool) != Some(true);
        match op {
            "PutItem" => {
                let item = body.get("Item");
                let size = json_item_size(item);
                Sent {
                    key,
                    written: size,
                    index_writes: index_writes(item, None),
                    ..Sent::default()
                }
            }
            "UpdateItem" => {
                let expr = body.get("UpdateExpression").and_then(Value::as_str);
                let size = json_item_size(body.get("Key"))
                    + json_item_size(body.get("ExpressionAttributeValues"));
                Sent {
                    key,
                    written: size,
                    index_writes: index_writes(None, expr),
                    ..Sent::default()
                }
            }
            "DeleteItem" => Sent {
                key,
                units: Units {
                    read: 0.0,
                    write: 1.0,
                },
                ..Sent::default()
            },
            "BatchWriteItem" | "TransactWriteItems" => {
                let n = body.to_string().matches("\"Key\"").count().max(1) as f64;
                let factor = if op == "TransactWriteItems" { 2.0 } else { 1.0 };
                Sent {
                    key,
                    units: Units {
                        read: 0.0,
                        write: n * factor,
                    },
                    ..Sent::default()
                }
            }
            _ => Sent {
                key,
                eventual,
                ..Sent::default()
            },
        }
    }
}

impl Intercept for MeterCalls {
    fn name(&self) -> &'static str {
        "ferry-capacity-meter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let op = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |m| m.name())
            .to_string();
        let body: Value = context
            .request()
            .body()
            .bytes()
            .and_then(|b| serde_json::from_slice(b).ok())
            .unwrap_or(Value::Null);
        cfg.interceptor_state().store_put(Sent::of(&op, &body));
        Ok(())
    }

    fn read_after_execution(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use aws_sdk_dynamodb::operation as op;
        let Some(sent) = cfg.load::<Sent>().cloned() else {
            return Ok(());
        };
        let name = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |m| m.name())
            .to_string();
        let output = match context.output_or_error() {
            Some(Ok(o)) => Some(o),
            // A refused condition still costs the write (DynamoDB charges failed conditional
            // writes); other errors cost nothing.
            Some(Err(e)) if format!("{e:?}").contains("ConditionalCheckFailed") => None,
            _ => return Ok(()),
        };
        let mut units = sent.units;
        match name.as_str() {
            "PutItem" => units.write += write_units(sent.written) + sent.index_writes,
            "UpdateItem" => {
                let image = output
                    .and_then(|o| o.downcast_ref::<op::update_item::UpdateItemOutput>())
                    .and_then(|o| o.attributes())
                    .map_or(0, item_size);
                units.write += write_units(sent.written.max(image)) + sent.index_writes;
            }
            "GetItem" => {
                let size = output
                    .and_then(|o| o.downcast_ref::<op::get_item::GetItemOutput>())
                    .and_then(|o| o.item())
                    .map_or(0, item_size);
                units.read += read_units(size, sent.eventual);
            }
            "Query" => {
                let size: usize = output
                    .and_then(|o| o.downcast_ref::<op::query::QueryOutput>())
                    .map_or(0, |o| o.items().iter().map(item_size).sum());
                units.read += read_units(size, sent.eventual);
            }
            _ => {}
        }
        self.0.record(&name, &sent.key, units);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_dynamodbs_size_rules() {
        let cases = [
            (write_units(0), 1.0),
            (write_units(1024), 1.0),
            (write_units(1025), 2.0),
            (write_units(50 * 1024), 50.0),
            (read_units(4096, false), 1.0),
            (read_units(4097, false), 2.0),
            (read_units(4097, true), 1.0),
            (read_units(10, true), 0.5),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
        let item: HashMap<String, AttributeValue> = [
            ("pk".to_string(), AttributeValue::S("RUN#j#r".into())),
            ("n".to_string(), AttributeValue::N("12345".into())),
            ("b".to_string(), AttributeValue::Bool(true)),
        ]
        .into();
        assert_eq!(item_size(&item), 2 + 7 + 1 + 4 + 1 + 1);
        let json: Value =
            serde_json::json!({"pk": {"S": "RUN#j#r"}, "n": {"N": "12345"}, "b": {"BOOL": true}});
        assert_eq!(json_item_size(Some(&json)), item_size(&item));
    }

    #[test]
    fn calls_are_charged_to_the_partition_key_they_touch() {
        let cases = [
            (
                serde_json::json!({"Key": {"pk": {"S": "RUN#a#1"}, "sk": {"S": "META"}}}),
                "RUN#a#1",
            ),
            (serde_json::json!({"Item": {"pk": {"S": "JOB#x"}}}), "JOB#x"),
            (
                serde_json::json!({"ExpressionAttributeValues": {":p": {"S": "OPEN#a#1#03"}}}),
                "OPEN#a#1#03",
            ),
            (serde_json::json!({}), "(table)"),
        ];
        for (body, key) in cases {
            assert_eq!(partition_key(&body), key);
        }
    }

    #[test]
    fn moving_a_claim_index_key_costs_two_index_writes_and_removing_it_one() {
        let cases = [
            (None, Some("SET leaseExpiry = :e"), 0.0),
            (
                None,
                Some("SET #o = :me, gsi2sk = :ready ADD attempts :one"),
                2.0,
            ),
            (None, Some("SET #st = :done REMOVE gsi2pk, gsi2sk"), 1.0),
        ];
        for (put, update, want) in cases {
            assert_eq!(index_writes(put, update), want, "{update:?}");
        }
        let chunk = serde_json::json!({"pk": {"S": "x"}, "gsi2pk": {"S": "OPEN"}});
        assert_eq!(index_writes(Some(&chunk), None), 1.0);
    }
}
