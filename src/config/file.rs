//! The configuration file of `serve` and `server` (`--config FILE`, `REGSERVE_CONFIG`): TOML whose
//! keys are the subcommand's long flags and the global flags with `_` for `-`, read off clap's own
//! definition (so a flag added anywhere is a key with no code here). Each file value becomes its
//! flag's default, so clap's own precedence gives flag > environment > file > built-in default and
//! every value goes through the flag's own parser; `--print-config` shows the outcome.
//!
//! Layout: keys at the top level apply to the subcommand being run; keys under a `[serve]` or
//! `[server]` table apply to that subcommand only (and win over the top level), so one file can
//! hold both. Every key in the file is checked — the other subcommand's table against that
//! subcommand — and every problem is reported at once, each with the file, line and key.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};

use super::Cli;

/// The variable naming the file when `--config` is not given.
pub const CONFIG_ENV: &str = "REGSERVE_CONFIG";
/// The subcommands that read the file; each may have its own table in it.
pub const SUBCOMMANDS: &[&str] = &["serve", "server"];
/// Arguments that are not keys: clap's own, and the file's.
const NOT_KEYS: &[&str] = &["help", "version", "config", "print_config"];
/// Flags whose environment fallback is read in code rather than by clap (`--registry-uri`
/// falls back on MLflow's variables): a file value yields to these variables too.
/// (key, the subcommands whose code reads the variables, the variables in order).
const CODE_ENV: &[(&str, &[&str], &[&str])] =
    &[("registry_uri", &["serve"], &["MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_URI"])];
/// Problems listed in one error; past it, how many more there are.
const MAX_SHOWN: usize = 100;
/// A configuration file is a few kilobytes; refuse anything past this before reading it whole.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// What the command line asks for once the file is applied.
#[derive(Debug)]
pub enum Loaded {
    /// Run the command.
    Run(Box<Cli>),
    /// `--print-config`: print this TOML and exit.
    Print(String),
}

#[derive(Debug)]
pub enum LoadError {
    /// A usage error of clap's (bad flag, missing value, `--help`, `--version`).
    Clap(clap::Error),
    /// The configuration file is missing, not TOML, or has bad keys or values.
    File(FileError),
}

/// Everything wrong with one configuration file.
#[derive(Debug)]
pub struct FileError {
    pub path: PathBuf,
    pub problems: Vec<Problem>,
}

/// One problem, at a line of the file when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let n = self.problems.len();
        write!(f, "configuration file {path} (--config / {CONFIG_ENV}): {n} problem{}", if n == 1 { "" } else { "s" })?;
        for p in self.problems.iter().take(MAX_SHOWN) {
            write!(f, "\n  {path}")?;
            if let Some(line) = p.line {
                write!(f, ":{line}")?;
            }
            match &p.key {
                Some(key) => write!(f, ": {key}: {}", p.message)?,
                None => write!(f, ": {}", p.message)?,
            }
        }
        if n > MAX_SHOWN {
            write!(f, "\n  … and {} more", n - MAX_SHOWN)?;
        }
        Ok(())
    }
}

impl std::error::Error for FileError {}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Clap(e) => write!(f, "{e}"),
            LoadError::File(e) => write!(f, "{e}"),
        }
    }
}

/// The command line of this process, with the configuration file applied. Prints and exits on a
/// usage error, a bad file (status 2, every problem listed) and `--print-config` (status 0).
pub fn cli() -> Cli {
    match load(std::env::args_os().collect(), &|k| std::env::var(k).ok()) {
        Ok(Loaded::Run(cli)) => *cli,
        Ok(Loaded::Print(text)) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            std::process::exit(0)
        }
        Err(LoadError::Clap(e)) => e.exit(),
        Err(LoadError::File(e)) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    }
}

/// Parse `argv` with the configuration file it names (or `$REGSERVE_CONFIG`) applied. `env` reads
/// the variables that a flag falls back on in code ([`CODE_ENV`]); clap reads the flags' own.
pub fn load(argv: Vec<OsString>, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, LoadError> {
    let mut cmd = Cli::command();
    // `--help`, `--version` and command lines without a subcommand go straight to clap.
    let Some(pre) = prescan(&cmd, &argv) else { return parse(cmd, &argv).map(|cli| Loaded::Run(Box::new(cli))) };
    let applies = SUBCOMMANDS.contains(&pre.sub.as_str());
    if !applies {
        let misuse = match (&pre.config, pre.print) {
            (_, true) => Some("--print-config"),
            (Some((_, ValueSource::CommandLine)), _) => Some("--config"),
            // $REGSERVE_CONFIG set for a container's `serve` must not break `models list` in it.
            _ => None,
        };
        if let Some(flag) = misuse {
            let msg = format!("{flag} applies to `regserve serve` and `regserve server`, not `{}`", pre.sub);
            return Err(LoadError::Clap(cmd.error(clap::error::ErrorKind::ArgumentConflict, msg)));
        }
        return parse(cmd, &argv).map(|cli| Loaded::Run(Box::new(cli)));
    }
    // In `--help` order, taken before `mut_arg` moves the arguments it changes to the end.
    let keys = Keys::of(&cmd, &pre.sub);
    let mut applied = Applied::default();
    if let Some((path, _)) = &pre.config {
        let text = read(path).map_err(|message| {
            LoadError::File(FileError {
                path: path.clone(),
                problems: vec![Problem { line: None, key: None, message }],
            })
        })?;
        let (values, problems) = check(&cmd, &pre.sub, &keys, &text);
        if !problems.is_empty() {
            return Err(LoadError::File(FileError { path: path.clone(), problems }));
        }
        for (name, (values, line)) in values {
            applied.lines.insert(name.clone(), line);
            let key = keys.get(&name).expect("checked keys are keys; this is a bug");
            if let Some(var) = code_env(&pre.sub, &name, env) {
                applied.overridden.insert(name, var);
                continue;
            }
            let id = key.id.clone();
            let set = move |a: Arg| a.default_values(values).required(false);
            cmd = if key.global { cmd.mut_arg(id, set) } else { cmd.mut_subcommand(&pre.sub, |s| s.mut_arg(id, set)) };
            applied.from_file.push(name);
        }
        applied.path = Some(path.clone());
    }
    let matches = cmd.clone().try_get_matches_from(&argv).map_err(LoadError::Clap)?;
    let problems = conflicts(&cmd, &keys, &matches, &pre.sub, &applied);
    if let (Some(path), false) = (&applied.path, problems.is_empty()) {
        return Err(LoadError::File(FileError { path: path.clone(), problems }));
    }
    if pre.print {
        return Ok(Loaded::Print(render(&cmd, &keys, &matches, &pre.sub, &applied, env)));
    }
    let cli = Cli::from_arg_matches(&matches).map_err(|e| LoadError::Clap(e.format(&mut cmd)))?;
    Ok(Loaded::Run(Box::new(cli)))
}

fn parse(cmd: Command, argv: &[OsString]) -> Result<Cli, LoadError> {
    let mut cmd = cmd;
    let matches = cmd.clone().try_get_matches_from(argv).map_err(LoadError::Clap)?;
    Cli::from_arg_matches(&matches).map_err(|e| LoadError::Clap(e.format(&mut cmd)))
}

/// What a first, forgiving parse of the command line tells: the subcommand, the file and where
/// its name came from, and `--print-config`.
struct Prescan {
    sub: String,
    config: Option<(PathBuf, ValueSource)>,
    print: bool,
}

fn prescan(cmd: &Command, argv: &[OsString]) -> Option<Prescan> {
    let lenient = cmd.clone().ignore_errors(true).mut_subcommands(|s| s.ignore_errors(true));
    let m = lenient.try_get_matches_from(argv).ok()?;
    let (sub, sm) = m.subcommand()?;
    let config = [sm, &m].into_iter().find_map(|m| {
        let path = m.try_get_one::<PathBuf>("config").ok().flatten()?;
        let source = m.value_source("config")?;
        (!path.as_os_str().is_empty()).then(|| (path.clone(), source))
    });
    let print = [sm, &m].into_iter().any(|m| m.try_get_one::<bool>("print_config").ok().flatten() == Some(&true));
    Some(Prescan { sub: sub.to_string(), config, print })
}

/// The first variable of a flag's in-code fallback that is set, if that flag has one in `sub`.
fn code_env(sub: &str, key: &str, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let (_, _, vars) = CODE_ENV.iter().find(|(k, subs, _)| *k == key && subs.contains(&sub))?;
    vars.iter().find(|v| env(v).is_some_and(|x| !x.trim().is_empty())).map(|v| v.to_string())
}

fn read(path: &Path) -> Result<String, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "it is larger than {} KiB; a configuration file is a few lines of TOML",
            MAX_FILE_BYTES >> 10
        ));
    }
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text (TOML is UTF-8)".to_string())
}

/// How a flag takes its values, which decides the TOML type of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--flag` alone: `true` or `false`.
    Bool,
    /// One value: a string, or an integer/float that is written as the flag takes it.
    One,
    /// Repeatable or comma-separated: an array (one value alone also does).
    Many,
}

#[derive(Debug, Clone)]
struct Key {
    id: String,
    long: String,
    global: bool,
    kind: Kind,
    hidden: bool,
}

/// The keys of one subcommand: its own long flags and the global ones, in `--help` order.
struct Keys(Vec<(String, Key)>);

impl Keys {
    fn of(cmd: &Command, sub: &str) -> Keys {
        let key = |a: &Arg, global: bool| {
            let long = a.get_long()?;
            let name = long.replace('-', "_");
            if NOT_KEYS.contains(&name.as_str()) || NOT_KEYS.contains(&a.get_id().as_str()) {
                return None;
            }
            let kind = match a.get_action() {
                ArgAction::SetTrue | ArgAction::SetFalse => Kind::Bool,
                ArgAction::Append => Kind::Many,
                _ if a.get_value_delimiter().is_some() => Kind::Many,
                _ if a.get_num_args().is_some_and(|n| n.max_values() > 1) => Kind::Many,
                ArgAction::Set | ArgAction::Count => Kind::One,
                _ => return None,
            };
            let id = a.get_id().to_string();
            Some((name, Key { id, long: long.to_string(), global, kind, hidden: a.is_hide_set() }))
        };
        let globals = cmd.get_arguments().filter(|a| a.is_global_set()).filter_map(|a| key(a, true));
        let own = cmd
            .find_subcommand(sub)
            .into_iter()
            .flat_map(|sc| sc.get_arguments().filter(|a| !a.is_global_set()).filter_map(|a| key(a, false)));
        // Two arguments spelling one key (`--model-name` and a separate hidden `--model_name`):
        // one key, the visible argument's.
        let mut keys: Vec<(String, Key)> = Vec::new();
        for (name, k) in globals.chain(own) {
            match keys.iter_mut().find(|(n, _)| *n == name) {
                Some(existing) if existing.1.hidden && !k.hidden => existing.1 = k,
                Some(_) => {}
                None => keys.push((name, k)),
            }
        }
        Keys(keys)
    }

    fn get(&self, name: &str) -> Option<&Key> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, k)| k)
    }

    fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(n, _)| n.as_str())
    }
}

/// The argument behind a key: on the root command for a global flag, else on the subcommand.
fn arg<'c>(cmd: &'c Command, sub: &str, key: &Key) -> &'c Arg {
    let owner =
        if key.global { cmd } else { cmd.find_subcommand(sub).expect("keys come from the subcommand; this is a bug") };
    owner.get_arguments().find(|a| a.get_id() == key.id.as_str()).expect("keys come from the arguments; this is a bug")
}

/// A TOML value reduced to what a flag can take.
#[derive(Debug)]
enum Value {
    /// A string, integer, float or datetime: the text the flag is given.
    Text(String),
    Bool(bool),
    Array(Vec<Value>),
    Table,
}

impl Value {
    fn from_toml(v: &DeValue<'_>) -> Value {
        match v {
            DeValue::String(s) => Value::Text(s.to_string()),
            DeValue::Integer(i) => Value::Text(
                i64::from_str_radix(i.as_str(), i.radix()).map(|n| n.to_string()).unwrap_or_else(|_| i.to_string()),
            ),
            DeValue::Float(x) => Value::Text(x.to_string()),
            DeValue::Boolean(b) => Value::Bool(*b),
            DeValue::Datetime(d) => Value::Text(d.to_string()),
            DeValue::Array(a) => Value::Array(a.into_iter().map(|v| Value::from_toml(v.get_ref())).collect()),
            DeValue::Table(_) => Value::Table,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Text(_) => "a string or number",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Table => "a table",
        }
    }
}

/// A key's values as its flag takes them, and the line it is on.
type FileValue = (Vec<String>, usize);

/// Check every key of the file for subcommand `sub`: the values that apply (table over top
/// level) with their lines, or every problem found, in the file's order.
fn check(cmd: &Command, sub: &str, keys: &Keys, text: &str) -> (BTreeMap<String, FileValue>, Vec<Problem>) {
    let newlines: Vec<usize> = text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i).collect();
    let line_of = |offset: usize| newlines.partition_point(|nl| *nl < offset) + 1;
    let (doc, errors) = DeTable::parse_recoverable(text);
    let mut problems: Vec<(usize, Problem)> = errors
        .iter()
        .map(|e| {
            let at = e.span().map(|s| s.start).unwrap_or(0);
            (at, Problem { line: Some(line_of(at)), key: None, message: format!("not TOML: {}", e.message().trim()) })
        })
        .collect();
    if !problems.is_empty() {
        problems.sort_by_key(|(at, _)| *at);
        return (BTreeMap::new(), problems.into_iter().map(|(_, p)| p).collect());
    }
    let mut checker = checker(cmd);
    let mut top = BTreeMap::new();
    let mut table = BTreeMap::new();
    for (k, v) in doc.get_ref() {
        let name = k.get_ref().to_string();
        let at = k.span().start;
        match v.get_ref() {
            DeValue::Table(inner) if SUBCOMMANDS.contains(&name.as_str()) => {
                let this = name == sub;
                let other_keys;
                let table_keys = if this {
                    keys
                } else {
                    other_keys = Keys::of(cmd, &name);
                    &other_keys
                };
                for (ik, iv) in inner {
                    let iname = ik.get_ref().to_string();
                    let iat = ik.span().start;
                    let shown = format!("{name}.{iname}");
                    match check_one(cmd, &mut checker, &name, table_keys, &iname, &Value::from_toml(iv.get_ref()), None)
                    {
                        Ok(values) if this => {
                            table.insert(iname, (values, line_of(iat)));
                        }
                        Ok(_) => {}
                        Err(message) => {
                            problems.push((iat, Problem { line: Some(line_of(iat)), key: Some(shown), message }))
                        }
                    }
                }
            }
            value => match check_one(cmd, &mut checker, sub, keys, &name, &Value::from_toml(value), Some(sub)) {
                Ok(values) => {
                    top.insert(name, (values, line_of(at)));
                }
                Err(message) => problems.push((at, Problem { line: Some(line_of(at)), key: Some(name), message })),
            },
        }
    }
    problems.sort_by_key(|(at, _)| *at);
    top.extend(table);
    (top, problems.into_iter().map(|(_, p)| p).collect())
}

/// Runs a flag's own parser on one value: the command with nothing required and no
/// environment read, given `regserve SUB --flag=value` alone (clap's value parsers are not public
/// on their own).
fn checker(cmd: &Command) -> Command {
    let lax = |a: Arg| a.required(false).env(None);
    cmd.clone()
        .mut_args(lax)
        .subcommand_required(false)
        .arg_required_else_help(false)
        .mut_subcommands(move |s| s.mut_args(lax).subcommand_required(false).arg_required_else_help(false))
}

/// Check one key and value against `sub`'s flags: the flag's values as strings, or why not.
/// `top_level` is set for keys outside any table (where the other subcommand's keys get a hint).
fn check_one(
    cmd: &Command,
    checker: &mut Command,
    sub: &str,
    keys: &Keys,
    name: &str,
    value: &Value,
    top_level: Option<&str>,
) -> Result<Vec<String>, String> {
    let Some(key) = keys.get(name) else { return Err(unknown(cmd, sub, keys, name, top_level)) };
    let flag = format!("--{}", key.long);
    let texts: Vec<String> = match (key.kind, value) {
        (_, Value::Table) => return Err(format!("is a table; {flag} takes {}", kind_takes(key.kind))),
        (Kind::Bool, Value::Bool(b)) => vec![b.to_string()],
        (Kind::Bool, other) => {
            return Err(format!("{flag} is an on/off flag: write true or false, not {}", other.type_name()))
        }
        (Kind::One, Value::Array(_)) => return Err(format!("{flag} takes one value, not an array")),
        (Kind::One | Kind::Many, Value::Text(s)) => vec![s.clone()],
        (Kind::One | Kind::Many, Value::Bool(b)) => vec![b.to_string()],
        (Kind::Many, Value::Array(items)) => {
            let mut texts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::Text(s) => texts.push(s.clone()),
                    Value::Bool(b) => texts.push(b.to_string()),
                    other => {
                        return Err(format!("{flag} takes an array of strings, not one holding {}", other.type_name()))
                    }
                }
            }
            texts
        }
    };
    let arg = arg(cmd, sub, key);
    let mut bad = Vec::new();
    if key.kind != Kind::Bool {
        for text in &texts {
            let mut flag_value = OsString::from(format!("--{}=", key.long));
            flag_value.push(text);
            if let Err(e) = checker.try_get_matches_from_mut([OsStr::new("regserve"), OsStr::new(sub), &flag_value]) {
                bad.push(clap_message(&e));
            }
        }
    }
    if bad.is_empty() {
        return Ok(texts);
    }
    let said = bad.join("; ");
    let lower = said.to_ascii_lowercase();
    let help = arg
        .get_help()
        .map(|h| first_sentence(&h.to_string()))
        .filter(|h| !h.is_empty() && !lower.contains("possible values") && !lower.contains("accepted"));
    Err(match help {
        Some(help) => format!("{said} (the flag: {help})"),
        None => said,
    })
}

fn kind_takes(kind: Kind) -> &'static str {
    match kind {
        Kind::Bool => "true or false",
        Kind::One => "one value",
        Kind::Many => "an array of values",
    }
}

/// Why `name` is not a key of `sub`, with the closest key when one is close.
fn unknown(cmd: &Command, sub: &str, keys: &Keys, name: &str, top_level: Option<&str>) -> String {
    if NOT_KEYS.contains(&name) {
        return format!("'{name}' is not a key of the configuration file (it is a command-line flag only)");
    }
    if let Some(sub) = top_level {
        for other in SUBCOMMANDS.iter().filter(|o| **o != sub) {
            if Keys::of(cmd, other).get(name).is_some() {
                return format!(
                    "unknown key for `regserve {sub}`: '{name}' is a key of `regserve {other}`; put it under [{other}]"
                );
            }
        }
    }
    let underscored = name.replace('-', "_");
    let closest = if keys.get(&underscored).is_some() {
        Some(underscored)
    } else {
        keys.names()
            .map(|k| (strsim::jaro(name, k), k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k.to_string())
    };
    match closest {
        Some(k) => format!("unknown key for `regserve {sub}` (did you mean '{k}'?)"),
        None => format!(
            "unknown key for `regserve {sub}` (keys are its long flags with '_' for '-'; see `regserve {sub} --help`)"
        ),
    }
}

/// A clap error on one line: without its `error: ` prefix, usage and tips, the possible values
/// kept; std's integer message said in words a configuration's reader knows.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    let joined = lines.join(" ");
    let message = joined.strip_prefix("error: ").unwrap_or(&joined);
    message.replace("invalid digit found in string", "not a whole number")
}

fn first_sentence(help: &str) -> String {
    let line = help.lines().next().unwrap_or_default().trim();
    let line = line.split(". ").next().unwrap_or(line);
    line.trim_end_matches('.').to_string()
}

/// Which keys the file set and which of them yielded to an in-code variable.
#[derive(Default)]
struct Applied {
    path: Option<PathBuf>,
    from_file: Vec<String>,
    lines: BTreeMap<String, usize>,
    overridden: BTreeMap<String, String>,
}

/// Clap checks the conflicts between flags given on the command line or in the environment, not
/// between defaults — and file values are defaults: check each pair where a file value takes
/// part (the arguments that declare a conflict; clap's own check covers the rest).
fn conflicts(cmd: &Command, keys: &Keys, matches: &ArgMatches, sub: &str, applied: &Applied) -> Vec<Problem> {
    if applied.from_file.is_empty() {
        return Vec::new();
    }
    let mut built = cmd.clone();
    built.build();
    let (Some(sc), Some(sub_matches)) = (built.find_subcommand(sub), matches.subcommand_matches(sub)) else {
        return Vec::new();
    };
    let source = |name: &str, key: &Key| -> Option<String> {
        let m = if key.global { matches } else { sub_matches };
        let off = key.kind == Kind::Bool && m.get_raw(&key.id).and_then(|mut v| v.next()).is_some_and(|v| v == "false");
        if off {
            return None; // an on/off flag that is off is not there
        }
        match m.value_source(&key.id)? {
            ValueSource::CommandLine => Some(format!("--{} on the command line", key.long)),
            ValueSource::EnvVariable => Some(format!("--{}'s variable", key.long)),
            ValueSource::DefaultValue if applied.from_file.iter().any(|f| f == name) => {
                Some(format!("'{name}' in the file"))
            }
            _ => None,
        }
    };
    let mut problems = Vec::new();
    for (name, key) in keys.0.iter().filter(|(_, k)| !k.global) {
        let Some(this) = source(name, key) else { continue };
        let Some(arg) = sc.get_arguments().find(|a| a.get_id() == key.id.as_str()) else { continue };
        for other in sc.get_arg_conflicts_with(arg) {
            let Some((other_name, other_key)) = keys.0.iter().find(|(_, k)| k.id == other.get_id().as_str()) else {
                continue;
            };
            let Some(that) = source(other_name, other_key) else { continue };
            let (this_in_file, that_in_file) = (this.ends_with("in the file"), that.ends_with("in the file"));
            if !(this_in_file || that_in_file) {
                continue; // both on the command line or in the environment: clap has said so
            }
            let at = if this_in_file { name } else { other_name };
            problems.push(Problem {
                line: applied.lines.get(at).copied(),
                key: Some(at.clone()),
                message: format!("{this} cannot be used with {that}"),
            });
        }
    }
    problems
}

/// The effective configuration as TOML that loads back with `--config`: every key of the
/// subcommand, its value (secrets redacted), and a comment naming where it came from.
fn render(
    cmd: &Command,
    keys: &Keys,
    matches: &ArgMatches,
    sub: &str,
    applied: &Applied,
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    let sub_matches = matches.subcommand_matches(sub).expect("the prescan found this subcommand; this is a bug");
    let file = applied.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let mut out = format!(
        "# Effective configuration of `regserve {sub}` (flag > environment > file > default).\n\
         # Secrets are shown as \"***\"; this loads back with `regserve {sub} --config FILE`.\n"
    );
    for (name, key) in &keys.0 {
        if key.hidden {
            continue;
        }
        let arg = arg(cmd, sub, key);
        let m = if key.global { matches } else { sub_matches };
        let raw: Option<Vec<String>> =
            m.get_raw(&key.id).map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect());
        let source = match m.value_source(&key.id) {
            Some(ValueSource::CommandLine) => format!("flag --{}", key.long),
            Some(ValueSource::EnvVariable) => {
                format!("env {}", arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default())
            }
            Some(ValueSource::DefaultValue) if applied.from_file.contains(name) => format!("file {file}"),
            _ => "default".to_string(),
        };
        let (raw, source) = match raw {
            Some(raw) => (raw, source),
            None => match code_env(sub, name, env) {
                Some(var) => {
                    let why = if applied.overridden.contains_key(name) { ", over the file" } else { "" };
                    (vec![env(&var).unwrap_or_default()], format!("env {var}{why}"))
                }
                None => {
                    out.push_str(&format!("# {name} is not set ({source})\n"));
                    continue;
                }
            },
        };
        let secret = is_secret(name);
        let shown: Vec<String> = raw.iter().map(|v| toml_scalar(key.kind, v, secret)).collect();
        let value = match key.kind {
            Kind::Many => format!("[{}]", shown.join(", ")),
            _ => shown.into_iter().next().unwrap_or_else(|| "\"\"".to_string()),
        };
        out.push_str(&format!("{name} = {value}  # {source}\n"));
    }
    out
}

/// A flag whose value is a secret itself (a file path naming one is not).
fn is_secret(name: &str) -> bool {
    let secretive = ["token", "password", "secret"].iter().any(|s| name.contains(s));
    secretive && !["_file", "_path", "_dir"].iter().any(|s| name.ends_with(s))
}

/// One value as TOML: booleans and integers bare (they load back to the same text), the rest
/// as strings, URI passwords and secrets redacted.
fn toml_scalar(kind: Kind, raw: &str, secret: bool) -> String {
    if secret {
        return toml::Value::String("***".into()).to_string();
    }
    if kind == Kind::Bool && (raw == "true" || raw == "false") {
        return raw.to_string();
    }
    if raw.parse::<i64>().is_ok_and(|n| n.to_string() == raw) {
        return raw.to_string();
    }
    let redacted = crate::uri::redact_url(raw);
    let shown = if redacted.contains("***") { redacted } else { raw.to_string() };
    toml::Value::String(shown).to_string()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::config::{Command as Sub, PinnedVersions, ServeArgs, ServerArgs};

    /// Tests that set the flags' variables (clap reads the process's environment) take turns.
    static ENV: Mutex<()> = Mutex::new(());

    fn no_env(_: &str) -> Option<String> {
        None
    }

    struct File {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    fn file(text: &str) -> File {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("regserve.toml");
        std::fs::write(&path, text).unwrap();
        File { _dir: dir, path }
    }

    fn argv(args: &[&str], f: &File) -> Vec<OsString> {
        let mut v: Vec<OsString> = ["regserve"].iter().chain(args).map(OsString::from).collect();
        v.push("--config".into());
        v.push(f.path.clone().into());
        v
    }

    fn load_with(text: &str, args: &[&str], env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, LoadError> {
        let f = file(text);
        load(argv(args, &f), env)
    }

    fn cli(text: &str, args: &[&str]) -> Cli {
        match load_with(text, args, &no_env) {
            Ok(Loaded::Run(cli)) => *cli,
            Ok(Loaded::Print(p)) => panic!("printed {p}"),
            Err(e) => panic!("{e}"),
        }
    }

    fn serve(text: &str, args: &[&str]) -> ServeArgs {
        match cli(text, &[&["serve"], args].concat()).command {
            Sub::Serve(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn server(text: &str, args: &[&str]) -> ServerArgs {
        match cli(text, &[&["server"], args].concat()).command {
            Sub::Server(a) => a,
            other => panic!("{other:?}"),
        }
    }

    fn file_error(text: &str, args: &[&str]) -> (FileError, String) {
        match load_with(text, args, &no_env) {
            Err(LoadError::File(e)) => {
                let shown = e.to_string();
                (e, shown)
            }
            Err(LoadError::Clap(e)) => panic!("clap error instead of a file error: {e}"),
            Ok(_) => panic!("{text} loaded"),
        }
    }

    fn printed(text: &str, args: &[&str], env: &dyn Fn(&str) -> Option<String>) -> String {
        match load_with(text, &[args, &["--print-config"]].concat(), env) {
            Ok(Loaded::Print(p)) => p,
            Ok(Loaded::Run(_)) => panic!("ran instead of printing"),
            Err(e) => panic!("{e}"),
        }
    }

    /// The `key = value` lines of a `--print-config` output, comments dropped.
    fn assignments(printed: &str) -> Vec<String> {
        printed.lines().filter(|l| !l.starts_with('#')).map(|l| l.split("  # ").next().unwrap().to_string()).collect()
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let text = "model = [\"models:/a/1\"]\nmax_batch_size = 32\n";
        std::env::remove_var("REGSERVE_MAX_BATCH_SIZE");
        assert_eq!(serve("model = [\"models:/a/1\"]", &[]).runtime.max_batch_size, 64, "default");
        assert_eq!(serve(text, &[]).runtime.max_batch_size, 32, "file over default");
        std::env::set_var("REGSERVE_MAX_BATCH_SIZE", "16");
        let env_wins = serve(text, &[]).runtime.max_batch_size;
        let flag_wins = serve(text, &["--max-batch-size", "8"]).runtime.max_batch_size;
        let shown = printed(text, &["serve"], &no_env);
        std::env::remove_var("REGSERVE_MAX_BATCH_SIZE");
        assert_eq!((env_wins, flag_wins), (16, 8), "env over file, flag over env");
        assert!(shown.contains("max_batch_size = 16  # env REGSERVE_MAX_BATCH_SIZE\n"), "{shown}");
        // The global flags are keys too, and a flag before or after the subcommand wins.
        let c = cli("model = [\"models:/a/1\"]\nload_timeout = \"5s\"\ndata_dir = \"/srv/x\"", &["serve"]);
        assert_eq!((c.global.load_timeout, c.global.data_dir.as_path()), (Duration::from_secs(5), Path::new("/srv/x")));
        let c = cli("model = [\"models:/a/1\"]\nload_timeout = \"5s\"", &["--load-timeout", "7s", "serve"]);
        assert_eq!(c.global.load_timeout, Duration::from_secs(7));
    }

    #[test]
    fn every_type_of_value_reaches_its_field() {
        let args = serve(
            r#"
            model = ["models:/fraud@champion", "models:/iris/Production"]
            default_model = "iris"
            host = "0.0.0.0"
            port = 8080
            max_body_size = "1MiB"        # sizes as the flag takes them
            model_cache_size = 1048576    # or a plain integer
            poll_interval = "500ms"       # durations as the flag takes them
            max_batch_delay = 2           # a bare number of seconds
            intra_threads = 0x2           # any TOML integer
            pinned_versions = "any"
            allowed_hosts = ["*.example.com", "localhost:8080"]
            auth_token_file = "/var/run/secrets/regserve/token"
            "#,
            &[],
        );
        let models: Vec<String> = args.models.iter().map(|m| m.to_string()).collect();
        assert_eq!(models, ["models:/fraud@champion", "models:/iris/Production"]);
        assert_eq!(args.default_index(&args.served().unwrap()), Ok(1));
        assert_eq!(args.addr().to_string(), "0.0.0.0:8080");
        assert_eq!((args.max_body_size, args.model_cache_size), (1 << 20, 1 << 20));
        assert_eq!(
            (args.poll_interval, args.runtime.max_batch_delay),
            (Duration::from_millis(500), Duration::from_secs(2))
        );
        assert_eq!(args.runtime.intra_threads, 2);
        assert_eq!(args.pinned_versions, PinnedVersions::Any);
        assert_eq!(args.http.allowed_hosts.len(), 2);
        assert_eq!(args.http.auth_token_file.as_deref(), Some(Path::new("/var/run/secrets/regserve/token")));
        // One URI alone needs no array.
        assert_eq!(serve("model = \"models:/a@b\"", &[]).models.len(), 1);
        // A list on the command line replaces the file's whole list.
        let models = serve("model = [\"models:/a/1\", \"models:/b/1\"]", &["-m", "models:/c/1"]).models;
        assert_eq!(models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(), ["c"]);
    }

    #[test]
    fn booleans_and_the_tables_of_one_shared_file() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
        std::env::remove_var("REGSERVE_AUTH_READS");
        let shared = r#"
            shutdown_grace = "45s"          # both subcommands
            [serve]
            model = ["models:/a/1"]
            port = 8080
            [server]
            port = 5001
            auth_reads = true
            webhook_allowed_schemes = ["https", "http"]
        "#;
        let s = server(shared, &[]);
        assert!(s.auth_reads);
        assert_eq!((s.port, s.http.shutdown_grace), (5001, Duration::from_secs(45)));
        assert_eq!(s.webhook_allowed_schemes, ["https", "http"]);
        let v = serve(shared, &[]);
        assert_eq!((v.port, v.http.shutdown_grace), (8080, Duration::from_secs(45)));
        // false in the file, and a variable saying false over true in the file.
        assert!(!server("auth_reads = false", &[]).auth_reads);
        std::env::set_var("REGSERVE_AUTH_READS", "false");
        let env_false = server(shared, &[]).auth_reads;
        std::env::remove_var("REGSERVE_AUTH_READS");
        assert!(!env_false);
        // The subcommand's table wins over the top level.
        assert_eq!(serve("port = 1\n[serve]\nmodel = \"models:/a/1\"\nport = 2", &[]).port, 2);
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_closest_key() {
        let (e, shown) = file_error("model = \"models:/a/1\"\nmax_batch = 3\n", &["serve"]);
        assert_eq!(e.problems.len(), 1, "{shown}");
        assert_eq!(e.problems[0].line, Some(2));
        assert_eq!(e.problems[0].key.as_deref(), Some("max_batch"));
        assert!(shown.contains("did you mean 'max_batch_size'?"), "{shown}");
        assert!(shown.contains(&format!("{}:2: max_batch:", e.path.display())), "{shown}");
        let (_, shown) = file_error("max-body-size = \"1MiB\"\n", &["serve", "-m", "models:/a/1"]);
        assert!(shown.contains("did you mean 'max_body_size'?"), "{shown}");
        let (_, shown) = file_error("auth_reads = true\nmodel = \"models:/a/1\"", &["serve"]);
        assert!(shown.contains("'auth_reads' is a key of `regserve server`; put it under [server]"), "{shown}");
        // The other subcommand's table is checked against that subcommand.
        let (_, shown) = file_error("model = \"models:/a/1\"\n[server]\nwebhook_timeot = 3", &["serve"]);
        assert!(shown.contains(":3: server.webhook_timeot:") && shown.contains("'webhook_timeout'"), "{shown}");
        for not_key in ["config = \"x.toml\"", "print_config = true", "help = true", "[models]\nx = 1"] {
            let (e, shown) = file_error(not_key, &["serve", "-m", "models:/a/1"]);
            assert_eq!(e.problems.len(), 1, "{shown}");
        }
        let (_, shown) = file_error("zzz_nothing_like = 1", &["serve", "-m", "models:/a/1"]);
        assert!(shown.contains("unknown key") && !shown.contains("did you mean"), "{shown}");
    }

    #[test]
    fn every_bad_value_is_reported_at_once() {
        let text = r#"model = ["models:/a/1", "models:/fraud"]
port = 70000
shutdown_grace = "30 parsecs"
pinned_versions = "all"
max_body_size = "12XB"
host = [ "0.0.0.0" ]
intra_threads = "many"
[server]
auth_reads = "yes"
webhook_timeout = 0
"#;
        let (e, shown) = file_error(text, &["serve"]);
        let at: Vec<(Option<usize>, Option<&str>)> = e.problems.iter().map(|p| (p.line, p.key.as_deref())).collect();
        assert_eq!(
            at,
            [
                (Some(1), Some("model")),
                (Some(2), Some("port")),
                (Some(3), Some("shutdown_grace")),
                (Some(4), Some("pinned_versions")),
                (Some(5), Some("max_body_size")),
                (Some(6), Some("host")),
                (Some(7), Some("intra_threads")),
                (Some(9), Some("server.auth_reads")),
                (Some(10), Some("server.webhook_timeout")),
            ],
            "{shown}"
        );
        assert!(shown
            .starts_with(&format!("configuration file {} (--config / REGSERVE_CONFIG): 9 problems", e.path.display())));
        for said in [
            "'models:/fraud'",
            "Accepted forms",
            "70000 is not in 0..=65535",
            "unknown duration unit 'parsecs'",
            "[possible values: in-service, any]",
            "unknown size unit",
            "--host takes one value, not an array",
            "not a whole number",
            "write true or false",
        ] {
            assert!(shown.contains(said), "{said} missing from {shown}");
        }
    }

    #[test]
    fn conflicting_flags_are_refused_when_the_file_sets_one() {
        let both = "no_serve_artifacts = true\nartifacts_destination = \"s3://b/p\"";
        let (e, shown) = file_error(both, &["server"]);
        assert_eq!(e.problems.len(), 1, "{shown}");
        assert_eq!((e.problems[0].line, e.problems[0].key.as_deref()), (Some(1), Some("no_serve_artifacts")));
        assert!(
            shown.contains("'no_serve_artifacts' in the file cannot be used with 'artifacts_destination' in the file"),
            "{shown}"
        );
        let (_, shown) = file_error("no_serve_artifacts = true", &["server", "--artifacts-destination", "s3://b/p"]);
        assert!(shown.contains("cannot be used with --artifacts-destination on the command line"), "{shown}");
        let (e, shown) = file_error("artifacts_destination = \"s3://b/p\"", &["server", "--no-serve-artifacts"]);
        assert_eq!(e.problems[0].key.as_deref(), Some("artifacts_destination"), "{shown}");
        // Set to false, the flag is absent: no conflict.
        assert!(!server("no_serve_artifacts = false\nartifacts_destination = \"s3://b/p\"", &[]).no_serve_artifacts);
    }

    #[test]
    fn a_missing_or_broken_file_is_an_error_naming_it() {
        let missing = PathBuf::from("/nonexistent/regserve.toml");
        let args: Vec<OsString> = ["regserve", "serve", "-m", "models:/a/1", "--config", "/nonexistent/regserve.toml"]
            .iter()
            .map(OsString::from)
            .collect();
        let Err(LoadError::File(e)) = load(args, &no_env) else { panic!("loaded a missing file") };
        assert_eq!(e.path, missing);
        assert!(e.to_string().contains("/nonexistent/regserve.toml: cannot open it"), "{e}");
        let (e, shown) = file_error("port = \nmodel = [\"models:/a/1\"", &["serve"]);
        assert!(e.problems.iter().all(|p| p.message.starts_with("not TOML")), "{shown}");
        assert_eq!(e.problems[0].line, Some(1), "{shown}");
        let (_, shown) = file_error("port = 1\nport = 2\n", &["serve", "-m", "models:/a/1"]);
        assert!(shown.contains("not TOML") && shown.contains(":2:"), "{shown}");
        let many: String = (0..150).map(|i| format!("unknown_{i} = 1\n")).collect();
        let (e, shown) = file_error(&many, &["serve", "-m", "models:/a/1"]);
        assert_eq!((e.problems.len(), shown.lines().count()), (150, 1 + 100 + 1));
        assert!(shown.ends_with("… and 50 more") && shown.contains(":100: unknown_99:"), "{shown}");
        let huge = format!("# {}\nport = 1\n", "x".repeat(MAX_FILE_BYTES as usize));
        let (_, shown) = file_error(&huge, &["serve", "-m", "models:/a/1"]);
        assert!(shown.contains("larger than 1024 KiB"), "{shown}");
        let f = file("");
        std::fs::write(&f.path, b"port = \"\xff\"\n").unwrap();
        let Err(LoadError::File(e)) = load(argv(&["serve", "-m", "models:/a/1"], &f), &no_env) else { panic!() };
        assert!(e.to_string().contains("not UTF-8"), "{e}");
    }

    #[test]
    fn other_subcommands_refuse_the_flags_and_ignore_the_variable() {
        let f = file("model = \"models:/a/1\"");
        let Err(LoadError::Clap(e)) = load(argv(&["models", "list"], &f), &no_env) else { panic!() };
        assert!(e.to_string().contains("--config applies to `regserve serve` and `regserve server`"), "{e}");
        let argv: Vec<OsString> = ["regserve", "models", "list", "--print-config"].iter().map(OsString::from).collect();
        assert!(matches!(load(argv, &no_env), Err(LoadError::Clap(_))));
        // `--help` is clap's, whatever the file holds.
        let Err(LoadError::Clap(e)) = load_with("nonsense = 1", &["serve", "--help"], &no_env) else { panic!() };
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
    }

    #[test]
    fn print_config_shows_sources_redacts_and_loads_back() {
        let _env = ENV.lock().unwrap_or_else(|e| e.into_inner()); // every key is printed, variables' too
        let text = r#"
            model = ["models:/a@champion"]
            port = 8080
            backend_store_uri = "postgresql://regserve:hunter2@db:5432/registry?sslmode=require"
            auth_token_file = "/var/run/secrets/regserve/token"
            webhook_secret_file = "/var/run/secrets/regserve/webhook"
        "#;
        let out = printed(text, &["serve", "--poll-interval", "1s"], &no_env);
        assert!(!out.contains("hunter2"), "{out}");
        assert!(
            out.contains("backend_store_uri = \"postgresql://***@db:5432/registry?sslmode=require\"  # file "),
            "{out}"
        );
        assert!(out.contains("auth_token_file = \"/var/run/secrets/regserve/token\"  # file "), "{out}");
        assert!(out.contains("webhook_secret_file = \"/var/run/secrets/regserve/webhook\"  # file "), "{out}");
        assert!(out.contains("model = [\"models:/a@champion\"]  # file "), "{out}");
        assert!(out.contains("port = 8080  # file "), "{out}");
        assert!(out.contains("poll_interval = \"1s\"  # flag --poll-interval\n"), "{out}");
        assert!(out.contains("max_body_size = \"64MiB\"  # default\n"), "{out}");
        assert!(out.contains("# default_model is not set (default)\n"), "{out}");
        // Every key of `serve` is there, as a value or as "not set".
        for (name, key) in Keys::of(&Cli::command(), "serve").0 {
            assert!(
                key.hidden || out.contains(&format!("\n{name} = ")) || out.contains(&format!("# {name} is not set")),
                "{name}: {out}"
            );
        }
        // The output is a configuration file that gives the same configuration.
        let again = printed(&out, &["serve"], &no_env);
        assert_eq!(assignments(&again), assignments(&out), "{again}");
        // A server's output loads back too.
        let out = printed(
            "port = 5001\nauth_reads = true\nwebhook_allowed_schemes = [\"https\", \"http\"]",
            &["server"],
            &no_env,
        );
        assert!(out.contains("auth_reads = true  # file "), "{out}");
        assert_eq!(assignments(&printed(&out, &["server"], &no_env)), assignments(&out));
    }

    #[test]
    fn a_flag_added_to_the_command_is_a_key_with_its_own_parser() {
        let cmd = Cli::command().mut_subcommand("serve", |s| {
            s.arg(Arg::new("probe_port").long("probe-port").value_parser(clap::value_parser!(u16)))
                .arg(Arg::new("tenant_name_alias").long("tenant_name").hide(true))
                .arg(Arg::new("tenant_name").long("tenant-name"))
        });
        let keys = Keys::of(&cmd, "serve");
        assert!(keys.get("probe_port").is_some_and(|k| k.kind == Kind::One && !k.global));
        assert_eq!(keys.get("tenant_name").map(|k| k.id.as_str()), Some("tenant_name"), "the visible one");
        assert_eq!(keys.names().filter(|n| *n == "tenant_name").count(), 1);
        let (values, problems) = check(&cmd, "serve", &keys, "probe_port = 8081\ntenant_name = \"fraud\"");
        assert_eq!(problems, []);
        assert_eq!(values["probe_port"], (vec!["8081".to_string()], 1));
        let (_, problems) = check(&cmd, "serve", &keys, "probe_port = 70000\nprobe_prt = 1");
        let said: Vec<String> = problems.iter().map(|p| p.message.clone()).collect();
        assert!(said[0].contains("70000 is not in 0..=65535") && said[1].contains("'probe_port'"), "{said:?}");
    }

    #[test]
    fn secrets_are_redacted_by_name_but_files_naming_them_are_not() {
        assert!(is_secret("auth_token") && is_secret("db_password") && is_secret("webhook_secret"));
        assert!(!is_secret("auth_token_file") && !is_secret("webhook_secret_file") && !is_secret("port"));
        assert_eq!(toml_scalar(Kind::One, "s3cr3t", true), "\"***\"");
        assert_eq!(toml_scalar(Kind::One, "http://u:pw@h:5000/x", false), "\"http://***@h:5000/x\"");
        assert_eq!(toml_scalar(Kind::One, "http://mlflow:5000", false), "\"http://mlflow:5000\"");
        assert_eq!(toml_scalar(Kind::One, "8080", false), "8080");
        assert_eq!(toml_scalar(Kind::One, "007", false), "\"007\"");
        assert_eq!(toml_scalar(Kind::Bool, "true", false), "true");
    }

    #[test]
    fn registry_variables_read_in_code_still_beat_the_file() {
        let text = "model = \"models:/a/1\"\nregistry_uri = \"http://from-file:5000\"";
        let env = |k: &str| (k == "MLFLOW_TRACKING_URI").then(|| "http://u:pw@from-env:5000".to_string());
        let Ok(Loaded::Run(cli)) = load_with(text, &["serve"], &env) else { panic!() };
        assert_eq!(cli.global.registry_uri, None, "left to the variable");
        let out = printed(text, &["serve"], &env);
        assert!(
            out.contains("registry_uri = \"http://***@from-env:5000/\"  # env MLFLOW_TRACKING_URI, over the file\n"),
            "{out}"
        );
        let Ok(Loaded::Run(cli)) = load_with(text, &["serve"], &no_env) else { panic!() };
        assert_eq!(cli.global.registry_uri.as_deref(), Some("http://from-file:5000"));
        // `server` does not read those variables: nothing to show for them.
        let out = printed("port = 5001", &["server"], &env);
        assert!(out.contains("# registry_uri is not set (default)\n"), "{out}");
    }
}
