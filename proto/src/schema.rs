//! The standard datasets as typed schemas, read from the descriptor pool's
//! annotations (`yrd.mesh.v1.dataset` and `yrd.mesh.v1.field`).
//!
//! Adding a dataset is adding an annotated message: nothing here names one.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value as ReflectValue};

use crate::mesh::{
    DatasetInfo, DatasetOptions, FieldInfo, FieldOptions, FieldType as ProtoFieldType, Sensitivity, SharingClass,
    ValueFormat,
};

/// Full name of the message option that marks a standard dataset.
pub const DATASET_OPTION: &str = "yrd.mesh.v1.dataset";
/// Full name of the field option that annotates a dataset field.
pub const FIELD_OPTION: &str = "yrd.mesh.v1.field";
/// The field every dataset carries with its province-level region code.
pub const REGION_FIELD: &str = "region";
/// Prefix of the type URL that packs a row in a `google.protobuf.Any`.
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";
/// Longest value, in characters, of a string field whose descriptor sets no
/// `max_length`: room for any free text a register holds, small enough
/// that one value cannot bloat a row.
pub const DEFAULT_MAX_LENGTH: usize = 4096;
/// The most a descriptor's `max_length` may allow (characters): a value
/// of this many four-byte characters still fits a 64 KiB row.
pub const MAX_MAX_LENGTH: usize = 16_384;

/// A dataset whose descriptor breaks one of the rules the mesh relies on.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The descriptor set does not decode.
    #[error("descriptor set does not decode: {0}")]
    Descriptor(#[from] prost_reflect::DescriptorError),
    /// An annotation is missing from the descriptor set.
    #[error("option {0} is not defined in the descriptor set")]
    MissingOption(&'static str),
    /// A dataset breaks a rule.
    #[error("dataset message {message}: {reason}")]
    Invalid {
        /// The message's full name.
        message: String,
        /// What is wrong.
        reason: String,
    },
}

/// The value type of a dataset field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// UTF-8 text.
    String,
    /// 64-bit integer.
    Int,
    /// Double.
    Double,
    /// Boolean.
    Bool,
    /// `google.protobuf.Timestamp`, whole seconds.
    Timestamp,
    /// A `YYYY-MM-DD` date in a string field.
    Date,
}

impl FieldType {
    /// The protocol's enum value.
    pub fn to_proto(self) -> ProtoFieldType {
        match self {
            Self::String => ProtoFieldType::String,
            Self::Int => ProtoFieldType::Int,
            Self::Double => ProtoFieldType::Double,
            Self::Bool => ProtoFieldType::Bool,
            Self::Timestamp => ProtoFieldType::Timestamp,
            Self::Date => ProtoFieldType::Date,
        }
    }

    /// A short lowercase name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Int => "integer",
            Self::Double => "number",
            Self::Bool => "boolean",
            Self::Timestamp => "timestamp",
            Self::Date => "date",
        }
    }

    /// Whether values are numbers (sum and avg apply).
    pub fn is_numeric(self) -> bool {
        matches!(self, Self::Int | Self::Double)
    }
}

/// One field of a dataset.
#[derive(Debug, Clone)]
pub struct FieldSchema {
    /// Field name, also the store's column name.
    pub name: String,
    /// Protobuf field number.
    pub number: u32,
    /// Value type.
    pub ty: FieldType,
    /// Sensitivity.
    pub sensitivity: Sensitivity,
    /// Sharing class.
    pub sharing: SharingClass,
    /// Unit of measure, if any.
    pub unit: String,
    /// Code list the values must belong to, if any.
    pub code_list: Option<String>,
    /// Value format rule.
    pub format: ValueFormat,
    /// May be filtered.
    pub filterable: bool,
    /// May be sorted.
    pub sortable: bool,
    /// Must have a value.
    pub required: bool,
    /// Smallest valid value of a numeric field.
    pub min: Option<f64>,
    /// Title in Chinese.
    pub title_zh: String,
    /// The mask applied when no grant names another (PERSONAL and SECRET
    /// fields always have one), in the node's mask vocabulary.
    pub default_mask: Option<String>,
    /// Longest valid value in characters, for string and date fields: the
    /// descriptor's `max_length`, else [`DEFAULT_MAX_LENGTH`]. `None` for
    /// other types.
    pub max_length: Option<usize>,
}

impl FieldSchema {
    /// Whether values of this field must never reach a log line or a span.
    pub fn is_confidential(&self) -> bool {
        matches!(self.sensitivity, Sensitivity::Personal | Sensitivity::Secret)
    }

    /// The catalog view of the field.
    pub fn info(&self) -> FieldInfo {
        FieldInfo {
            name: self.name.clone(),
            r#type: self.ty.to_proto() as i32,
            sensitivity: self.sensitivity as i32,
            sharing: self.sharing as i32,
            unit: self.unit.clone(),
            code_list: self.code_list.clone().unwrap_or_default(),
            filterable: self.filterable,
            sortable: self.sortable,
            required: self.required,
            title_zh: self.title_zh.clone(),
            default_mask: self.default_mask.clone().unwrap_or_default(),
        }
    }
}

/// One standard dataset.
#[derive(Debug, Clone)]
pub struct DatasetSchema {
    /// Dataset id, such as `enterprise`.
    pub id: String,
    /// Full name of the row message.
    pub message_name: String,
    /// Type URL of a packed row.
    pub type_url: String,
    /// Titles, steward, standards, version.
    pub options: DatasetOptions,
    /// Fields in declaration order.
    pub fields: Vec<FieldSchema>,
    /// Indexes into `fields` of the primary key, in order.
    pub primary_key: Vec<usize>,
    /// Index into `fields` of the region field.
    pub region_field: usize,
    by_name: HashMap<String, usize>,
}

impl DatasetSchema {
    /// The field called `name`, with its index.
    pub fn field(&self, name: &str) -> Option<(usize, &FieldSchema)> {
        self.by_name.get(name).map(|&i| (i, &self.fields[i]))
    }

    /// The catalog view of the dataset, without per-region figures.
    pub fn info(&self) -> DatasetInfo {
        DatasetInfo {
            id: self.id.clone(),
            message_type: self.message_name.clone(),
            title_en: self.options.title_en.clone(),
            title_zh: self.options.title_zh.clone(),
            steward: self.options.steward.clone(),
            standards: self.options.standards.clone(),
            primary_key: self.options.primary_key.clone(),
            schema_version: self.options.schema_version,
            fields: self.fields.iter().map(FieldSchema::info).collect(),
            regions: Vec::new(),
        }
    }

    fn from_descriptor(
        message: &MessageDescriptor,
        options: DatasetOptions,
        field_ext: &prost_reflect::ExtensionDescriptor,
    ) -> Result<Self, SchemaError> {
        let invalid = |reason: String| SchemaError::Invalid {
            message: message.full_name().to_owned(),
            reason,
        };
        if options.id.is_empty() {
            return Err(invalid("dataset option has no id".into()));
        }
        let mut fields = Vec::new();
        for field in message.fields() {
            if field.is_list() || field.is_map() {
                return Err(invalid(format!(
                    "field {} is repeated; datasets are flat",
                    field.name()
                )));
            }
            let fopts: FieldOptions = read_extension(&field.options(), field_ext)
                .map_err(|e| invalid(format!("field {}: {e}", field.name())))?;
            let format = ValueFormat::try_from(fopts.format).unwrap_or(ValueFormat::Unspecified);
            let ty = match field.kind() {
                Kind::String if format == ValueFormat::Date => FieldType::Date,
                Kind::String => FieldType::String,
                Kind::Int64 | Kind::Int32 | Kind::Sint64 | Kind::Sint32 => FieldType::Int,
                Kind::Double | Kind::Float => FieldType::Double,
                Kind::Bool => FieldType::Bool,
                Kind::Message(m) if m.full_name() == "google.protobuf.Timestamp" => FieldType::Timestamp,
                other => {
                    return Err(invalid(format!(
                        "field {} has unsupported type {other:?}",
                        field.name()
                    )));
                }
            };
            let sensitivity = Sensitivity::try_from(fopts.sensitivity).unwrap_or(Sensitivity::Unspecified);
            if sensitivity == Sensitivity::Unspecified {
                return Err(invalid(format!("field {} has no sensitivity", field.name())));
            }
            let sharing = SharingClass::try_from(fopts.sharing).unwrap_or(SharingClass::Unspecified);
            if sharing == SharingClass::Unspecified {
                return Err(invalid(format!("field {} has no sharing class", field.name())));
            }
            if fopts.sortable && !fopts.required {
                return Err(invalid(format!(
                    "field {} is sortable but not required; sort keys never hold nulls",
                    field.name()
                )));
            }
            if matches!(sensitivity, Sensitivity::Personal | Sensitivity::Secret)
                && (fopts.filterable || fopts.sortable)
            {
                return Err(invalid(format!(
                    "field {} is personal or secret and may not be filtered or sorted",
                    field.name()
                )));
            }
            let max_length = match (ty, fopts.max_length as usize) {
                (FieldType::String | FieldType::Date, 0) => Some(DEFAULT_MAX_LENGTH),
                (FieldType::String | FieldType::Date, n) if n <= MAX_MAX_LENGTH => Some(n),
                (FieldType::String | FieldType::Date, n) => {
                    return Err(invalid(format!(
                        "field {} has max_length {n}, more than {MAX_MAX_LENGTH}",
                        field.name()
                    )));
                }
                (_, 0) => None,
                (other, _) => {
                    return Err(invalid(format!(
                        "field {} is a {} field; max_length applies to strings and dates",
                        field.name(),
                        other.name()
                    )));
                }
            };
            if matches!(sensitivity, Sensitivity::Personal | Sensitivity::Secret) && fopts.default_mask.is_empty() {
                return Err(invalid(format!(
                    "field {} is personal or secret and declares no default_mask",
                    field.name()
                )));
            }
            fields.push(FieldSchema {
                name: field.name().to_owned(),
                number: field.number(),
                ty,
                sensitivity,
                sharing,
                unit: fopts.unit,
                code_list: (!fopts.code_list.is_empty()).then_some(fopts.code_list),
                format,
                filterable: fopts.filterable,
                sortable: fopts.sortable,
                required: fopts.required,
                min: fopts.has_min.then_some(fopts.min),
                title_zh: fopts.title_zh,
                default_mask: (!fopts.default_mask.is_empty()).then_some(fopts.default_mask),
                max_length,
            });
        }
        let by_name: HashMap<String, usize> = fields.iter().enumerate().map(|(i, f)| (f.name.clone(), i)).collect();
        if options.primary_key.is_empty() {
            return Err(invalid("dataset has no primary key".into()));
        }
        let mut primary_key = Vec::new();
        for name in &options.primary_key {
            let &i = by_name
                .get(name)
                .ok_or_else(|| invalid(format!("primary key field {name} does not exist")))?;
            if !fields[i].sortable {
                return Err(invalid(format!("primary key field {name} must be sortable")));
            }
            primary_key.push(i);
        }
        let &region_field = by_name
            .get(REGION_FIELD)
            .ok_or_else(|| invalid(format!("dataset has no {REGION_FIELD} field")))?;
        if fields[region_field].ty != FieldType::String || !fields[region_field].filterable {
            return Err(invalid(format!("field {REGION_FIELD} must be a filterable string")));
        }
        Ok(Self {
            id: options.id.clone(),
            message_name: message.full_name().to_owned(),
            type_url: format!("{TYPE_URL_PREFIX}{}", message.full_name()),
            options,
            fields,
            primary_key,
            region_field,
            by_name,
        })
    }
}

/// The set of standard datasets.
#[derive(Debug, Clone)]
pub struct Registry {
    datasets: Vec<Arc<DatasetSchema>>,
}

impl Registry {
    /// Every message of `pool` annotated as a dataset, checked against the
    /// mesh's rules.
    pub fn from_pool(pool: &DescriptorPool) -> Result<Self, SchemaError> {
        let dataset_ext = pool
            .get_extension_by_name(DATASET_OPTION)
            .ok_or(SchemaError::MissingOption(DATASET_OPTION))?;
        let field_ext = pool
            .get_extension_by_name(FIELD_OPTION)
            .ok_or(SchemaError::MissingOption(FIELD_OPTION))?;
        let mut datasets: Vec<Arc<DatasetSchema>> = Vec::new();
        for message in pool.all_messages() {
            let opts = message.options();
            if !opts.has_extension(&dataset_ext) {
                continue;
            }
            let dopts: DatasetOptions = read_extension(&opts, &dataset_ext).map_err(|reason| SchemaError::Invalid {
                message: message.full_name().to_owned(),
                reason,
            })?;
            let schema = DatasetSchema::from_descriptor(&message, dopts, &field_ext)?;
            if datasets.iter().any(|d| d.id == schema.id) {
                return Err(SchemaError::Invalid {
                    message: schema.message_name,
                    reason: format!("dataset id {} is used twice", schema.id),
                });
            }
            datasets.push(Arc::new(schema));
        }
        datasets.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Self { datasets })
    }

    /// The standard datasets compiled into this build.
    pub fn standard() -> Result<&'static Registry, &'static SchemaError> {
        static STANDARD: OnceLock<Result<Registry, SchemaError>> = OnceLock::new();
        STANDARD
            .get_or_init(|| {
                crate::descriptor_pool()
                    .map_err(SchemaError::from)
                    .and_then(|pool| Registry::from_pool(&pool))
            })
            .as_ref()
    }

    /// The dataset with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<DatasetSchema>> {
        self.datasets.iter().find(|d| d.id == id)
    }

    /// All datasets, ordered by id.
    pub fn datasets(&self) -> &[Arc<DatasetSchema>] {
        &self.datasets
    }
}

fn read_extension<T: prost::Message + Default>(
    options: &DynamicMessage,
    ext: &prost_reflect::ExtensionDescriptor,
) -> Result<T, String> {
    if !options.has_extension(ext) {
        return Err(format!("option {} is missing", ext.full_name()));
    }
    match options.get_extension(ext).as_ref() {
        ReflectValue::Message(m) => m
            .transcode_to::<T>()
            .map_err(|e| format!("option {} does not decode: {e}", ext.full_name())),
        _ => Err(format!("option {} is not a message", ext.full_name())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_datasets_load() {
        let registry = Registry::standard().unwrap();
        let ids: Vec<&str> = registry.datasets().iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "air_quality",
                "enterprise",
                "hazardous_waste",
                "property_rights",
                "water_quality"
            ]
        );
        let ent = registry.get("enterprise").unwrap();
        let (_, id) = ent.field("representative_id_number").unwrap();
        assert_eq!(id.sensitivity, Sensitivity::Secret);
        assert!(id.is_confidential());
        assert_eq!(ent.field("established").unwrap().1.ty, FieldType::Date);
        assert_eq!(ent.field("registered_capital").unwrap().1.min, Some(0.0));
        assert_eq!(ent.primary_key, vec![ent.field("credit_code").unwrap().0]);
        let air = registry.get("air_quality").unwrap();
        assert_eq!(air.field("observed_at").unwrap().1.ty, FieldType::Timestamp);
        assert_eq!(
            air.type_url,
            "type.googleapis.com/yrd.datasets.environment.v1.AirQualityHourly"
        );
    }

    #[test]
    fn string_fields_have_a_max_length() {
        let registry = Registry::standard().unwrap();
        let ent = registry.get("enterprise").unwrap();
        let max = |name: &str| ent.field(name).unwrap().1.max_length;
        assert_eq!(max("address"), Some(500));
        assert_eq!(max("name"), Some(200));
        assert_eq!(max("credit_code"), Some(18));
        assert_eq!(max("established"), Some(10), "a date field");
        assert_eq!(max("registered_capital"), None, "a number has no length");
        for d in registry.datasets() {
            for f in &d.fields {
                let text = matches!(f.ty, FieldType::String | FieldType::Date);
                assert_eq!(f.max_length.is_some(), text, "{}.{}", d.id, f.name);
                assert!(f.max_length.unwrap_or(0) <= MAX_MAX_LENGTH, "{}.{}", d.id, f.name);
            }
        }
    }
}
