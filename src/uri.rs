//! `models:/` URIs: which registered model version a user means.
//!
//! Accepted forms (as MLflow's client resolves them):
//! - `models:/<name>/<version>` — that version number
//! - `models:/<name>/<stage>` — highest version in the stage (None, Staging, Production, Archived; any case)
//! - `models:/<name>/latest` — highest version of any stage
//! - `models:/<name>@<alias>` — the version the alias points to
//!
//! Names may hold dots, dashes, underscores and (percent-encoded) spaces.
//!
//! Also [`redact_url`]: any URI with its credentials hidden, for messages and logs.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// A model version's lifecycle stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    None,
    Staging,
    Production,
    Archived,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::None, Stage::Staging, Stage::Production, Stage::Archived];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }

    /// Case-insensitive parse, as MLflow accepts stage input.
    pub fn parse(s: &str) -> Result<Stage, InvalidStage> {
        Stage::ALL.into_iter().find(|st| st.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| {
            InvalidStage(format!(
                "Invalid Model Version stage: {s}. Value must be one of None, Staging, Production, Archived."
            ))
        })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = InvalidStage;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::parse(s)
    }
}

impl serde::Serialize for Stage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Stage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Stage::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A stage name that is none of [`Stage::ALL`]; the registry reports it as
/// `INVALID_PARAMETER_VALUE` (`impl From<InvalidStage> for RegistryError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidStage(String);

/// What part of a registered model a URI selects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Selector {
    Version(u64),
    Stage(Stage),
    Latest,
    Alias(String),
}

/// A parsed `models:/` URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelUri {
    pub name: String,
    pub selector: Selector,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid model URI '{uri}': {reason}. Accepted forms: models:/<name>/<version>, models:/<name>/<stage> (None, Staging, Production, Archived), models:/<name>/latest, models:/<name>@<alias>")]
pub struct UriError {
    pub uri: String,
    pub reason: String,
}

const PATH_UNSAFE: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b'/').add(b'@').add(b'?').add(b'#');

impl ModelUri {
    pub fn new(name: impl Into<String>, selector: Selector) -> Self {
        ModelUri { name: name.into(), selector }
    }

    /// True when the selected version can change over time (stage, alias, latest).
    pub fn is_floating(&self) -> bool {
        !matches!(self.selector, Selector::Version(_))
    }
}

impl FromStr for ModelUri {
    type Err = UriError;

    fn from_str(uri: &str) -> Result<Self, UriError> {
        let err = |reason: &str| UriError { uri: uri.to_string(), reason: reason.to_string() };
        let rest = uri.strip_prefix("models:/").ok_or_else(|| err("it must start with 'models:/'"))?;
        // `models:///name/1` is accepted by MLflow too (empty authority).
        let rest = rest.trim_start_matches('/');
        if rest.is_empty() {
            return Err(err("the model name is missing"));
        }
        let decode = |s: &str| -> Result<String, UriError> {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| err("it is not valid UTF-8 after percent-decoding"))
        };
        let check_name = |name: &str| -> Result<(), UriError> {
            if name.trim().is_empty() {
                return Err(err("the model name is empty"));
            }
            Ok(())
        };

        // Alias form: the last '@' splits name and alias, and no '/' may follow it.
        if let Some(at) = rest.rfind('@') {
            if !rest[at..].contains('/') {
                let name = decode(&rest[..at])?;
                let alias = decode(&rest[at + 1..])?;
                check_name(&name)?;
                if name.contains('/') {
                    return Err(err("the model name may not contain '/'"));
                }
                if alias.is_empty() {
                    return Err(err("the alias after '@' is empty"));
                }
                return Ok(ModelUri::new(name, Selector::Alias(alias)));
            }
        }

        let rest = rest.trim_end_matches('/');
        let (name, suffix) =
            rest.split_once('/').ok_or_else(|| err("a version, stage, 'latest' or '@alias' must follow the name"))?;
        if suffix.contains('/') {
            return Err(err("too many path segments"));
        }
        let name = decode(name)?;
        check_name(&name)?;
        let suffix = decode(suffix)?;
        if suffix.is_empty() {
            return Err(err("the version or stage is empty"));
        }
        let selector = if suffix.bytes().all(|b| b.is_ascii_digit()) {
            let v: u64 = suffix.parse().map_err(|_| err("the version number is too large"))?;
            if v == 0 {
                return Err(err("version numbers start at 1"));
            }
            Selector::Version(v)
        } else if suffix.eq_ignore_ascii_case("latest") {
            Selector::Latest
        } else {
            let stage = Stage::parse(&suffix).map_err(|_| {
                err(&format!(
                    "'{suffix}' is neither a version number, 'latest', nor a stage (None, Staging, Production, Archived)"
                ))
            })?;
            Selector::Stage(stage)
        };
        Ok(ModelUri::new(name, selector))
    }
}

impl fmt::Display for ModelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = utf8_percent_encode(&self.name, PATH_UNSAFE);
        match &self.selector {
            Selector::Version(v) => write!(f, "models:/{name}/{v}"),
            Selector::Stage(s) => write!(f, "models:/{name}/{s}"),
            Selector::Latest => write!(f, "models:/{name}/latest"),
            Selector::Alias(a) => {
                write!(f, "models:/{name}@{}", utf8_percent_encode(a, PATH_UNSAFE))
            }
        }
    }
}

/// `url` with any user name and password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if !u.username().is_empty() || u.password().is_some() {
                let _ = u.set_username("***");
                let _ = u.set_password(None);
            }
            // libpq also takes the password as a query parameter.
            if u.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword"))
            {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let secret = k.eq_ignore_ascii_case("password") || k.eq_ignore_ascii_case("sslpassword");
                        (k.into_owned(), if secret { "***".to_owned() } else { v.into_owned() })
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        // Not a URL: hide whatever sits between "//" and "@".
        Err(_) => match (url.find("//"), url.rfind('@')) {
            (Some(a), Some(b)) if a + 2 <= b => format!("{}***{}", &url[..a + 2], &url[b..]),
            _ => url.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ModelUri {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn versions_stages_latest_alias() {
        assert_eq!(p("models:/fraud/3"), ModelUri::new("fraud", Selector::Version(3)));
        assert_eq!(p("models:/fraud/Production"), ModelUri::new("fraud", Selector::Stage(Stage::Production)));
        assert_eq!(p("models:/fraud/production"), ModelUri::new("fraud", Selector::Stage(Stage::Production)));
        assert_eq!(p("models:/fraud/STAGING"), ModelUri::new("fraud", Selector::Stage(Stage::Staging)));
        assert_eq!(p("models:/fraud/none"), ModelUri::new("fraud", Selector::Stage(Stage::None)));
        assert_eq!(p("models:/fraud/archived"), ModelUri::new("fraud", Selector::Stage(Stage::Archived)));
        assert_eq!(p("models:/fraud/latest"), ModelUri::new("fraud", Selector::Latest));
        assert_eq!(p("models:/fraud/Latest"), ModelUri::new("fraud", Selector::Latest));
        assert_eq!(p("models:/fraud@champion"), ModelUri::new("fraud", Selector::Alias("champion".into())));
        assert_eq!(p("models:///fraud/2"), ModelUri::new("fraud", Selector::Version(2)));
        assert_eq!(p("models:/fraud/2/"), ModelUri::new("fraud", Selector::Version(2)));
    }

    #[test]
    fn names_with_punctuation_and_spaces() {
        assert_eq!(p("models:/my.model-v_2/1").name, "my.model-v_2");
        assert_eq!(p("models:/fraud%20detector/Production").name, "fraud detector");
        assert_eq!(p("models:/fraud%20detector@prod%20a").selector, Selector::Alias("prod a".into()));
        assert_eq!(p("models:/a@b@c").name, "a@b");
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "models:/fraud/3",
            "models:/fraud/Production",
            "models:/fraud/latest",
            "models:/fraud@champion",
            "models:/fraud%20detector/None",
            "models:/a%40b@c",
        ] {
            assert_eq!(p(s).to_string(), s);
            assert_eq!(p(&p(s).to_string()), p(s));
        }
    }

    #[test]
    fn bad_uris_name_the_accepted_forms() {
        for s in [
            "fraud/1",
            "models:/",
            "models:/fraud",
            "models:/fraud/",
            "models:/fraud/Prod",
            "models:/fraud/0",
            "models:/fraud/1/2",
            "models:/fraud@",
            "models:/@alias",
            "models:/%20/1",
            "models:/fraud/99999999999999999999999",
            "runs:/abc/model",
        ] {
            let e = s.parse::<ModelUri>().expect_err(s);
            let msg = e.to_string();
            assert!(msg.contains("Accepted forms"), "{msg}");
            assert!(msg.contains(s), "{msg}");
        }
    }

    #[test]
    fn floating() {
        assert!(!p("models:/a/1").is_floating());
        assert!(p("models:/a/latest").is_floating());
        assert!(p("models:/a@x").is_floating());
        assert!(p("models:/a/Staging").is_floating());
    }

    #[test]
    fn stage_parse_is_case_insensitive_and_canonical() {
        assert_eq!(Stage::parse("production").unwrap(), Stage::Production);
        assert_eq!(Stage::parse("NONE").unwrap().to_string(), "None");
        let e = Stage::parse("Foo").unwrap_err().to_string();
        assert_eq!(e, "Invalid Model Version stage: Foo. Value must be one of None, Staging, Production, Archived.");
    }
}
