//! A derivation's attributes as a build reads them (Nix's `ParsedDerivation`): from the
//! structured attributes (`__json`) when there are some, else from the environment, where a
//! list is a white-space separated string and a Boolean is `1`.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::engine::format::Derivation;
use crate::engine::format::derivation::ByteSlice;

/// The attributes of one derivation.
#[derive(Debug, Clone)]
pub struct ParsedDrv<'a> {
    drv: &'a Derivation,
    /// `drv_path`, printed, for messages.
    drv_name: String,
    structured: Option<serde_json::Map<String, Value>>,
}

impl<'a> ParsedDrv<'a> {
    /// Parses `__json`; `drv_base_name` is the `.drv` path's base name (Nix's messages use it).
    pub fn new(drv: &'a Derivation, drv_base_name: &str) -> Result<ParsedDrv<'a>, String> {
        let structured = match drv.env_var("__json") {
            None => None,
            Some(json) => {
                let value: Value = serde_json::from_slice(json.as_bytes()).map_err(|e| {
                    format!("cannot process __json attribute of '{drv_base_name}': {e}")
                })?;
                match value {
                    Value::Object(map) => Some(map),
                    _ => {
                        return Err(format!(
                            "cannot process __json attribute of '{drv_base_name}': not an object"
                        ));
                    }
                }
            }
        };
        Ok(ParsedDrv {
            drv,
            drv_name: drv_base_name.to_owned(),
            structured,
        })
    }

    pub fn derivation(&self) -> &Derivation {
        self.drv
    }

    /// The structured attributes, if the derivation has them.
    pub fn structured_attrs(&self) -> Option<&serde_json::Map<String, Value>> {
        self.structured.as_ref()
    }

    pub fn get_string_attr(&self, name: &str) -> Result<Option<String>, String> {
        match &self.structured {
            Some(attrs) => match attrs.get(name) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!(
                    "attribute '{name}' of derivation '{}' must be a string",
                    self.drv_name
                )),
            },
            None => Ok(self
                .drv
                .env_var(name)
                .map(|v| v.to_str_lossy().into_owned())),
        }
    }

    pub fn get_bool_attr(&self, name: &str, default: bool) -> Result<bool, String> {
        match &self.structured {
            Some(attrs) => match attrs.get(name) {
                None => Ok(default),
                Some(Value::Bool(b)) => Ok(*b),
                Some(_) => Err(format!(
                    "attribute '{name}' of derivation '{}' must be a Boolean",
                    self.drv_name
                )),
            },
            None => Ok(self.drv.env_var(name).map_or(default, |v| v == "1")),
        }
    }

    pub fn get_strings_attr(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        match &self.structured {
            Some(attrs) => match attrs.get(name) {
                None => Ok(None),
                Some(v) => strings_of(v).map(Some).ok_or_else(|| {
                    format!(
                        "attribute '{name}' of derivation '{}' must be a list of strings",
                        self.drv_name
                    )
                }),
            },
            None => Ok(self.drv.env_var(name).map(|v| {
                tokenize(&v.to_str_lossy())
                    .into_iter()
                    .map(str::to_owned)
                    .collect()
            })),
        }
    }

    /// `requiredSystemFeatures`, plus `ca-derivations` when output paths are not known yet.
    pub fn required_system_features(&self) -> Result<BTreeSet<String>, String> {
        let mut out: BTreeSet<String> = self
            .get_strings_attr("requiredSystemFeatures")?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let known = self
            .drv
            .derivation_type()
            .is_ok_and(|t| t.has_known_output_paths());
        if !known {
            out.insert("ca-derivations".to_owned());
        }
        Ok(out)
    }

    pub fn prefer_local_build(&self) -> Result<bool, String> {
        self.get_bool_attr("preferLocalBuild", false)
    }

    pub fn substitutes_allowed(&self) -> Result<bool, String> {
        self.get_bool_attr("allowSubstitutes", true)
    }
}

/// The elements of a JSON list of strings.
pub fn strings_of(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|e| e.as_str().map(str::to_owned))
        .collect()
}

/// Nix's `tokenizeString` with its default separators (space, tab, newline, carriage return).
pub fn tokenize(s: &str) -> Vec<&str> {
    s.split([' ', '\t', '\n', '\r'])
        .filter(|t| !t.is_empty())
        .collect()
}
