//! Report wording in the engineers' language: English and Simplified Chinese.
//!
//! Every sentence a person reads in a report comes from one Fluent catalog per language
//! (`src/i18n/<lang>/*.ftl`, embedded at compile time). The rules do not write sentences: they
//! build a [`Msg`] (a catalog key and named arguments), and the sentences are rendered once the
//! language is known ([`Catalog::render`]). Numbers are formatted by the caller (with the
//! precision the English report always had, decimal point kept) and the unit is part of the
//! message ("8.0 s", "8.0 秒"); counts that choose a plural form are passed as numbers.

use std::fmt;

use crate::short_str::ShortStr;

use fluent_bundle::{FluentArgs, FluentBundle, FluentResource, FluentValue};

/// A report language.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Lang {
    #[default]
    En,
    ZhCn,
}

impl Lang {
    /// Every language with a catalog.
    pub const ALL: [Lang; 2] = [Lang::En, Lang::ZhCn];

    /// The BCP 47 tag: `en`, `zh-CN` (the JSON document's `lang`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::ZhCn => "zh-CN",
        }
    }

    /// `en`, `zh-CN` (also `zh_CN`, `zh`, `zh-Hans`, any case); None for anything else.
    pub fn parse(s: &str) -> Option<Lang> {
        let s = s.trim().replace('_', "-").to_ascii_lowercase();
        match s.as_str() {
            "en" | "en-us" | "en-gb" => Some(Lang::En),
            "zh" | "zh-cn" | "zh-hans" | "zh-hans-cn" | "zh-sg" => Some(Lang::ZhCn),
            _ => None,
        }
    }

    /// From a POSIX locale value such as `zh_CN.UTF-8` or `en_US`: its language and territory
    /// (codeset and modifier dropped). `C`, `POSIX` and unknown languages are English.
    pub fn from_locale(value: &str) -> Lang {
        let base = value.split(['.', '@']).next().unwrap_or("");
        let lower = base.replace('_', "-").to_ascii_lowercase();
        match lower.as_str() {
            "zh" | "zh-cn" | "zh-sg" | "zh-hans" | "zh-hans-cn" => Lang::ZhCn,
            _ => Lang::En,
        }
    }

    /// The default from the environment, as POSIX orders it: the first of LC_ALL,
    /// LC_MESSAGES and LANG that is set and not empty decides; English when none is.
    pub fn from_env() -> Lang {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// `from_env` over any variable lookup (for tests).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Lang {
        ["LC_ALL", "LC_MESSAGES", "LANG"]
            .iter()
            .filter_map(|k| get(k))
            .find(|v| !v.is_empty())
            .map_or(Lang::En, |v| Lang::from_locale(&v))
    }

    /// The catalog files of this language: (file name, text).
    pub fn sources(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::En => &[
                ("rules.ftl", include_str!("en/rules.ftl")),
                ("report.ftl", include_str!("en/report.ftl")),
            ],
            Lang::ZhCn => &[
                ("rules.ftl", include_str!("zh-CN/rules.ftl")),
                ("report.ftl", include_str!("zh-CN/report.ftl")),
            ],
        }
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.tag())
    }
}

impl std::str::FromStr for Lang {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Lang::parse(s).ok_or_else(|| format!("{s}: unknown language (en or zh-CN)"))
    }
}

/// A message argument, 24 bytes: short text inline, longer text, lists and messages boxed (a
/// finding's messages live until the report: ten thousand agent outages in the 2 GB churn
/// synth, ten arguments each).
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    /// Text as is, up to `SHORT_ARG` bytes, inline: an address, a vantage name, a number already
    /// formatted, a connection id (each a `Box<str>` was an allocation of its own).
    Short(ShortStr<SHORT_ARG>),
    /// Longer text as is.
    Str(Box<str>),
    /// A count: shown as is, and chooses plural forms.
    Int(i64),
    /// Another message, rendered first.
    Msg(Box<Msg>),
    /// Messages rendered and joined with a separator.
    List(Box<[Msg]>, Sep),
}

/// The longest text an `Arg` holds inline: what fits beside the enum's tag in the 24 bytes a
/// boxed string takes anyway.
pub const SHORT_ARG: usize = 22;

const _: () = assert!(std::mem::size_of::<Arg>() == 24);

/// What joins the messages of a list argument: a catalog key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sep {
    /// `list-sep`: ", " / "、".
    List,
    /// `clause-sep`: "; " / "；".
    Clause,
}

impl Sep {
    pub fn key(self) -> &'static str {
        match self {
            Sep::List => "list-sep",
            Sep::Clause => "clause-sep",
        }
    }
}

/// A catalog key with named arguments: what a rule says, before a language is chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Msg {
    pub key: &'static str,
    /// A boxed slice, 16 bytes where a `Vec` takes 24: a message is built once and then read.
    pub args: Box<[(&'static str, Arg)]>,
}

impl Msg {
    pub fn new(key: &'static str) -> Msg {
        Msg {
            key,
            args: Box::default(),
        }
    }

    /// Adds an argument, the list grown to its length only (`Vec::push` makes room for 4, then
    /// 8): a finding's messages, kept until the report, have 1 to 6 arguments of 40 bytes.
    fn arg(mut self, name: &'static str, a: Arg) -> Msg {
        let mut args = std::mem::take(&mut self.args).into_vec();
        args.reserve_exact(1);
        args.push((name, a));
        self.args = args.into_boxed_slice();
        self
    }

    /// A text argument (anything displayable: names, addresses, formatted numbers).
    pub fn s(self, name: &'static str, v: impl fmt::Display) -> Msg {
        let text = v.to_string();
        let arg = if text.len() <= SHORT_ARG {
            Arg::Short(ShortStr::new(&text))
        } else {
            Arg::Str(text.into_boxed_str())
        };
        self.arg(name, arg)
    }

    /// A count (chooses plural forms where the language has them).
    pub fn n(self, name: &'static str, v: impl TryInto<i64>) -> Msg {
        self.arg(name, Arg::Int(v.try_into().unwrap_or(i64::MAX)))
    }

    /// Another message as an argument.
    pub fn m(self, name: &'static str, v: Msg) -> Msg {
        self.arg(name, Arg::Msg(Box::new(v)))
    }

    /// A list of messages as one argument, joined with `list-sep` (", " / "、").
    pub fn list(self, name: &'static str, v: Vec<Msg>) -> Msg {
        self.list_with(name, Sep::List, v)
    }

    /// A list of messages as one argument, joined with `sep`.
    pub fn list_with(self, name: &'static str, sep: Sep, v: Vec<Msg>) -> Msg {
        self.arg(name, Arg::List(v.into_boxed_slice(), sep))
    }
}

/// The message `empty`: nothing, for an optional part left out.
pub fn empty() -> Msg {
    Msg::new("empty")
}

/// One language's catalog, ready to render.
pub struct Catalog {
    lang: Lang,
    bundle: FluentBundle<FluentResource>,
}

impl Catalog {
    pub fn new(lang: Lang) -> Catalog {
        let id: unic_langid::LanguageIdentifier = lang.tag().parse().expect("valid tag");
        let mut bundle = FluentBundle::new(vec![id]);
        // No Unicode isolation marks around arguments: reports are plain text and Markdown.
        bundle.set_use_isolating(false);
        for (name, text) in lang.sources() {
            let res = FluentResource::try_new(text.to_string())
                .unwrap_or_else(|(_, e)| panic!("{}/{name}: {e:?}", lang.tag()));
            bundle
                .add_resource(res)
                .unwrap_or_else(|e| panic!("{}/{name}: {e:?}", lang.tag()));
        }
        Catalog { lang, bundle }
    }

    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// A message without arguments.
    pub fn get(&self, key: &'static str) -> String {
        self.render(&Msg::new(key))
    }

    /// Renders a message; a missing key renders as the key itself (and fails the catalog tests).
    pub fn render(&self, msg: &Msg) -> String {
        let Some(pattern) = self.bundle.get_message(msg.key).and_then(|m| m.value()) else {
            return msg.key.to_string();
        };
        let mut args = FluentArgs::new();
        for (name, a) in &msg.args {
            let v: FluentValue = match a {
                Arg::Short(s) => FluentValue::from(s.as_str()),
                Arg::Str(s) => FluentValue::from(&**s),
                Arg::Int(i) => FluentValue::from(*i),
                Arg::Msg(m) => FluentValue::from(self.render(m)),
                Arg::List(ms, sep) => FluentValue::from(self.join(ms, sep.key())),
            };
            args.set(*name, v);
        }
        let mut errors = vec![];
        let out = self
            .bundle
            .format_pattern(pattern, Some(&args), &mut errors);
        debug_assert!(errors.is_empty(), "{}: {errors:?}", msg.key);
        out.into_owned()
    }

    /// Messages joined with the message `sep`.
    pub fn join(&self, ms: &[Msg], sep: &'static str) -> String {
        let sep = self.get(sep);
        ms.iter()
            .map(|m| self.render(m))
            .collect::<Vec<_>>()
            .join(&sep)
    }

    /// Sentences joined with `sentence-sep` (a space in English, nothing in Chinese).
    pub fn sentences(&self, ms: &[Msg]) -> String {
        let sep = self.get("sentence-sep");
        ms.iter()
            .map(|m| self.render(m))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(&sep)
    }
}

/// The message keys of a language's catalog, parsed from its files (messages and terms).
pub fn keys(lang: Lang) -> Vec<String> {
    let mut out = vec![];
    for (name, text) in lang.sources() {
        let res = match fluent_syntax::parser::parse(*text) {
            Ok(r) => r,
            Err((_, e)) => panic!("{}/{name}: {e:?}", lang.tag()),
        };
        for e in res.body {
            match e {
                fluent_syntax::ast::Entry::Message(m) => out.push(m.id.name.to_string()),
                fluent_syntax::ast::Entry::Term(t) => out.push(format!("-{}", t.id.name)),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Seconds with `d` decimals, decimal point in every language: `8.006`.
pub fn fixed(x: f64, d: usize) -> String {
    format!("{x:.d$}")
}
