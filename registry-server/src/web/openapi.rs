//! The OpenAPI 3.1 description of the JSON API, generated from the `.proto` descriptors the
//! server is built with, so it describes exactly the messages [`super::api`] parses and writes.
//! A copy lives in `docs/openapi.json`; a test fails when the two differ (run it with
//! `REGENERATE_OPENAPI=1` to rewrite the copy after changing a `.proto` file).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde_json::{Value, json};

use super::api::METHODS;

/// The document as pretty JSON (built once).
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut text = serde_json::to_string_pretty(&document()).unwrap_or_default();
        text.push('\n');
        text
    })
}

/// Every message and enum of the contract by full name (`keyregistry.v1.CheckValidityRequest`).
struct Types {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
}

fn descriptors() -> FileDescriptorSet {
    FileDescriptorSet::decode(registry_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set compiled into the binary decodes")
}

impl Types {
    fn load(set: FileDescriptorSet) -> Self {
        let mut types = Types { messages: BTreeMap::new(), enums: BTreeMap::new() };
        for file in set.file {
            let package = file.package.unwrap_or_default();
            for m in file.message_type {
                types.add_message(&package, m);
            }
            for e in file.enum_type {
                types.enums.insert(format!("{package}.{}", e.name()), e);
            }
        }
        types
    }

    fn add_message(&mut self, scope: &str, m: DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        for nested in &m.nested_type {
            self.add_message(&name, nested.clone());
        }
        for e in &m.enum_type {
            self.enums.insert(format!("{name}.{}", e.name()), e.clone());
        }
        self.messages.insert(name, m);
    }
}

/// The schema's name in `components.schemas`: the full name without the package.
fn schema_name(full: &str) -> String {
    full.strip_prefix("keyregistry.v1.").unwrap_or(full).to_string()
}

fn reference(full: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{}", schema_name(full)) })
}

/// Builds the whole document.
pub fn document() -> Value {
    let set = descriptors();
    let mut paths = serde_json::Map::new();
    let mut wanted: Vec<String> = Vec::new();
    let services: BTreeMap<String, _> = set
        .file
        .iter()
        .flat_map(|f| f.service.iter().map(|s| (s.name().to_string(), s.clone())))
        .collect();
    let types = Types::load(set);
    for method in METHODS {
        let Some(rpc) = services
            .get(method.service)
            .and_then(|s| s.method.iter().find(|m| m.name() == method.name))
        else {
            continue;
        };
        let input = rpc.input_type().trim_start_matches('.').to_string();
        let output = rpc.output_type().trim_start_matches('.').to_string();
        wanted.push(input.clone());
        wanted.push(output.clone());
        paths.insert(
            method.path(),
            json!({ "post": {
                "operationId": format!("{}.{}", method.service, method.name),
                "tags": [method.service],
                "summary": method.summary,
                "requestBody": { "required": true, "content": {
                    "application/json": { "schema": reference(&input) } } },
                "responses": {
                    "200": { "description": "The answer.", "content": {
                        "application/json": { "schema": reference(&output) } } },
                    "default": { "description": "An error: the gRPC code's name, its message and details, with the HTTP status the Connect protocol gives the code.",
                        "content": { "application/json": {
                            "schema": { "$ref": "#/components/schemas/Error" } } } }
                }
            }}),
        );
    }
    let mut schemas = BTreeMap::new();
    let mut seen = BTreeSet::new();
    while let Some(name) = wanted.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(m) = types.messages.get(&name) {
            schemas.insert(schema_name(&name), message_schema(m, &types, &mut wanted));
        } else if let Some(e) = types.enums.get(&name) {
            let values: Vec<&str> = e.value.iter().map(|v| v.name()).collect();
            schemas.insert(schema_name(&name), json!({ "type": "string", "enum": values }));
        }
    }
    schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Meter key registry: JSON API",
            "version": "v1",
            "description": "The read methods of keyregistry.v1 over HTTP: POST the request message as JSON (the protobuf JSON mapping) to /keyregistry.v1.<Service>/<Method>; the answer is the response message as JSON. The same messages, checks and errors as the gRPC API. The log itself is served as C2SP tlog-tiles at /checkpoint and /tile/."
        },
        "paths": paths,
        "components": { "schemas": schemas }
    })
}

fn message_schema(m: &DescriptorProto, types: &Types, wanted: &mut Vec<String>) -> Value {
    let mut properties = serde_json::Map::new();
    for field in &m.field {
        let mut schema = match field.r#type() {
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
                json!({ "type": "integer", "format": "int32" })
            }
            Type::Uint32 | Type::Fixed32 => json!({ "type": "integer", "format": "uint32" }),
            // The protobuf JSON mapping writes 64-bit integers as strings (and reads both).
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
                json!({ "type": ["string", "integer"], "format": "int64" })
            }
            Type::Uint64 | Type::Fixed64 => {
                json!({ "type": ["string", "integer"], "format": "uint64" })
            }
            Type::Bool => json!({ "type": "boolean" }),
            Type::String => json!({ "type": "string" }),
            Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Type::Enum | Type::Message | Type::Group => {
                let name = field.type_name().trim_start_matches('.').to_string();
                match name.as_str() {
                    "google.protobuf.Timestamp" => {
                        json!({ "type": "string", "format": "date-time" })
                    }
                    _ => {
                        if let Some(entry) = map_entry(&name, types) {
                            entry
                        } else {
                            wanted.push(name.clone());
                            reference(&name)
                        }
                    }
                }
            }
        };
        if field.label() == Label::Repeated && schema.get("additionalProperties").is_none() {
            schema = json!({ "type": "array", "items": schema });
        }
        if let Some(index) = field.oneof_index
            && !field.proto3_optional()
            && let Some(oneof) = m.oneof_decl.get(index as usize)
        {
            schema["description"] =
                Value::String(format!("One of `{}`: set at most one of its fields.", oneof.name()));
        }
        properties.insert(field.json_name().to_string(), schema);
    }
    json!({ "type": "object", "properties": properties, "additionalProperties": false })
}

/// A `map<string, V>` field's schema, if `name` is a map entry type.
fn map_entry(name: &str, types: &Types) -> Option<Value> {
    let entry = types.messages.get(name)?;
    if !entry.options.as_ref().is_some_and(|o| o.map_entry()) {
        return None;
    }
    let value = entry.field.iter().find(|f| f.number() == 2)?;
    let schema = match value.r#type() {
        Type::String => json!({ "type": "string" }),
        _ => json!({}),
    };
    Some(json!({ "type": "object", "additionalProperties": schema }))
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "required": ["code"],
        "properties": {
            "code": { "type": "string", "description": "The gRPC code's name: invalid_argument, not_found, ..." },
            "message": { "type": "string" },
            "details": { "type": "array", "items": {
                "type": "object",
                "properties": {
                    "type": { "type": "string", "description": "google.rpc.BadRequest, google.rpc.ErrorInfo, ..." },
                    "value": { "type": "string", "contentEncoding": "base64", "description": "The detail message, protobuf, base64 without padding." },
                    "debug": { "type": "object", "description": "The same detail as JSON (fieldViolations: [{field, description}], ...)." }
                }
            }}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is the document this build serves.
    #[test]
    fn the_checked_in_openapi_document_is_the_served_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
        if std::env::var_os("REGENERATE_OPENAPI").is_some() {
            std::fs::write(&path, document_json()).expect("writing docs/openapi.json");
        }
        let kept = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            kept == document_json(),
            "docs/openapi.json differs from the document the server serves; run \
             `REGENERATE_OPENAPI=1 cargo test -p registry-server openapi` and commit the file"
        );
    }

    #[test]
    fn every_method_and_its_messages_are_described() {
        let doc = document();
        for m in METHODS {
            assert!(doc["paths"][m.path()]["post"].is_object(), "{}", m.path());
        }
        let key = &doc["components"]["schemas"]["CheckValidityRequest"]["properties"];
        assert!(key["key"]["$ref"].is_string(), "{key}");
        assert_eq!(
            doc["components"]["schemas"]["Basis"]["properties"]["logSize"]["format"],
            "uint64"
        );
        assert_eq!(
            doc["components"]["schemas"]["Basis"]["properties"]["recordedAt"]["format"],
            "date-time"
        );
    }
}
