//! Attribute parsing shared by the three macros: `key = value` lists with
//! duplicate and unknown-key detection, name validation, error collection.

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::ext::IdentExt;
use syn::parse::{ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{Ident, Lit, LitInt, LitStr, Path, Token};

/// Collects every error of one macro call so that they are reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    /// An error spanned at `tokens` (from their first to their last token).
    pub(crate) fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// An error at `span`.
    pub(crate) fn at_span(&mut self, span: Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Fails with every error collected so far, then `error`.
    pub(crate) fn fail<T>(self, error: syn::Error) -> syn::Result<T> {
        match self.0 {
            Some(mut all) => {
                all.combine(error);
                Err(all)
            }
            None => Err(error),
        }
    }

    /// `Ok(())` when nothing was collected, else every error combined.
    pub(crate) fn finish(self) -> syn::Result<()> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The shape of a key's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `key = "text"`
    Str,
    /// `key = 5`
    U32,
    /// `key = some::Path` (or `key = "some::Path"`, as serde writes `crate`)
    Path,
    /// `key = ["a", "b"]` (or a single `"a"`)
    StrList,
    /// `key`, with no value
    Flag,
    /// Not valid here: the error text says where it belongs. Not listed among
    /// the expected keys.
    Misplaced(&'static str),
}

/// One key a macro accepts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Key {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    /// An example, used in error messages: `group = "sms_send_queue"`.
    pub(crate) example: &'static str,
}

impl Key {
    pub(crate) const fn new(name: &'static str, kind: Kind, example: &'static str) -> Self {
        Self {
            name,
            kind,
            example,
        }
    }
}

/// The keys of one attribute, and what its leading literal (if any) means.
pub(crate) struct Spec {
    /// How the attribute is written, for messages: `#[handler(...)]`.
    pub(crate) attr: &'static str,
    pub(crate) keys: &'static [Key],
    /// Whether a leading string literal is accepted (the event type of `#[event]`).
    pub(crate) positional: bool,
}

impl Spec {
    fn expected(&self) -> String {
        let names: Vec<String> = self
            .keys
            .iter()
            .filter(|k| !matches!(k.kind, Kind::Misplaced(_)))
            .map(|k| format!("`{}`", k.name))
            .collect();
        names.join(", ")
    }
}

/// A parsed value.
#[derive(Clone)]
pub(crate) enum Value {
    Str(LitStr),
    U32(u32, LitInt),
    Path(Path),
    StrList(Vec<LitStr>),
    Flag,
}

/// One `key = value` (or flag) of an attribute.
pub(crate) struct Entry {
    pub(crate) key: Ident,
    pub(crate) name: String,
    pub(crate) value: Value,
}

/// Everything parsed from one or more attributes of the same kind.
#[derive(Default)]
pub(crate) struct Args {
    /// Leading literals (only the first is meaningful; the caller checks the rest).
    pub(crate) positional: Vec<Lit>,
    pub(crate) entries: Vec<Entry>,
    /// Every known key written, valid value or not.
    pub(crate) seen: Vec<String>,
    /// An identifier was written where the leading literal belongs (and reported).
    pub(crate) bare_positional: bool,
}

impl Args {
    /// Parses `tokens` (the inside of the attribute's parentheses) and adds
    /// what it finds; every problem goes to `errors`, parsing goes on after it.
    pub(crate) fn parse_into(&mut self, tokens: TokenStream, spec: &Spec, errors: &mut Errors) {
        let parser = |input: ParseStream<'_>| -> syn::Result<()> {
            let mut index = 0usize;
            while !input.is_empty() {
                self.parse_item(input, index, spec, errors)?;
                index += 1;
                if input.is_empty() {
                    break;
                }
                if input.peek(Token![,]) {
                    input.parse::<Token![,]>()?;
                } else {
                    let tt: TokenTree = input.parse()?;
                    errors.at_span(tt.span(), "expected `,`");
                    skip_value(input)?;
                    if input.peek(Token![,]) {
                        input.parse::<Token![,]>()?;
                    }
                }
            }
            Ok(())
        };
        if let Err(e) = parser.parse2(tokens) {
            errors.push(e);
        }
    }

    fn parse_item(
        &mut self,
        input: ParseStream<'_>,
        index: usize,
        spec: &Spec,
        errors: &mut Errors,
    ) -> syn::Result<()> {
        if input.peek(Lit) {
            let lit: Lit = input.parse()?;
            if spec.positional {
                self.positional.push(lit);
            } else {
                errors.at(
                    &lit,
                    format!(
                        "unexpected literal in {}; expected one of: {}",
                        spec.attr,
                        spec.expected()
                    ),
                );
            }
            return Ok(());
        }
        if !input.peek(Ident::peek_any) {
            let tt: TokenTree = input.parse()?;
            errors.at_span(
                tt.span(),
                format!("expected a key, one of: {}", spec.expected()),
            );
            return skip_value(input);
        }
        let key = input.call(Ident::parse_any)?;
        let name = key.unraw().to_string();
        let Some(k) = spec.keys.iter().find(|k| k.name == name) else {
            let message = if spec.positional && index == 0 && !input.peek(Token![=]) {
                self.bare_positional = true;
                format!("the event type is a string literal: write #[event(\"{name}\")]")
            } else {
                unknown_key(&name, spec)
            };
            errors.at(&key, message);
            return skip_value(input);
        };
        if let Kind::Misplaced(why) = k.kind {
            errors.at(&key, why);
            return skip_value(input);
        }
        if self.seen.contains(&name) {
            errors.at(
                &key,
                format!("duplicate key `{name}`: it is already set in this attribute"),
            );
            return skip_value(input);
        }
        self.seen.push(name.clone());
        if k.kind == Kind::Flag {
            if input.peek(Token![=]) {
                let eq: Token![=] = input.parse()?;
                let rest = collect_value(input)?;
                errors.at(
                    quote!(#eq #rest),
                    format!("`{name}` takes no value: write `{}`", k.example),
                );
                return Ok(());
            }
            self.entries.push(Entry {
                key,
                name,
                value: Value::Flag,
            });
            return Ok(());
        }
        if !input.peek(Token![=]) {
            errors.at(
                &key,
                format!("`{name}` needs a value: write `{}`", k.example),
            );
            return skip_value(input);
        }
        let eq: Token![=] = input.parse()?;
        let value = collect_value(input)?;
        if value.is_empty() {
            errors.at(
                eq,
                format!("expected a value after `=`: write `{}`", k.example),
            );
            return Ok(());
        }
        match parse_value(value, k) {
            Ok(value) => self.entries.push(Entry { key, name, value }),
            Err(e) => errors.push(e),
        }
        Ok(())
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub(crate) fn str(&self, name: &str) -> Option<&LitStr> {
        match self.get(name).map(|e| &e.value) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn u32(&self, name: &str) -> Option<(u32, &LitInt)> {
        match self.get(name).map(|e| &e.value) {
            Some(Value::U32(n, lit)) => Some((*n, lit)),
            _ => None,
        }
    }

    pub(crate) fn path(&self, name: &str) -> Option<&Path> {
        match self.get(name).map(|e| &e.value) {
            Some(Value::Path(p)) => Some(p),
            _ => None,
        }
    }

    pub(crate) fn str_list(&self, name: &str) -> Option<&[LitStr]> {
        match self.get(name).map(|e| &e.value) {
            Some(Value::StrList(l)) => Some(l),
            _ => None,
        }
    }

    pub(crate) fn flag(&self, name: &str) -> bool {
        matches!(self.get(name).map(|e| &e.value), Some(Value::Flag))
    }

    /// The root path of the `eventbus` crate: `crate = path`, or `::eventbus`.
    pub(crate) fn krate(&self) -> TokenStream {
        match self.path("crate") {
            Some(path) => path.to_token_stream(),
            None => quote!(::eventbus),
        }
    }
}

/// The tokens of a value: everything up to the next top-level `,`.
fn collect_value(input: ParseStream<'_>) -> syn::Result<TokenStream> {
    let mut tokens = TokenStream::new();
    while !input.is_empty() && !input.peek(Token![,]) {
        let tt: TokenTree = input.parse()?;
        tokens.extend([tt]);
    }
    Ok(tokens)
}

/// Skips a value (`= ...`) after a bad key, up to the next top-level `,`.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    collect_value(input).map(drop)
}

fn parse_value(tokens: TokenStream, key: &Key) -> syn::Result<Value> {
    let name = key.name;
    let expected = |what: &str| {
        syn::Error::new_spanned(
            &tokens,
            format!("`{name}` expects {what}: write `{}`", key.example),
        )
    };
    match key.kind {
        Kind::Str => syn::parse2::<LitStr>(tokens.clone())
            .map(Value::Str)
            .map_err(|_| expected("a string literal")),
        Kind::U32 => {
            let lit =
                syn::parse2::<LitInt>(tokens.clone()).map_err(|_| expected("a whole number"))?;
            if !matches!(lit.suffix(), "" | "u32") {
                return Err(syn::Error::new_spanned(
                    &lit,
                    format!("`{name}` is a u32: drop the `{}` suffix", lit.suffix()),
                ));
            }
            let n = lit.base10_parse::<u32>().map_err(|_| {
                let why = if lit.base10_digits().starts_with('-') {
                    "cannot be negative"
                } else {
                    "is too large for a u32"
                };
                syn::Error::new_spanned(&tokens, format!("`{name}` {why}"))
            })?;
            Ok(Value::U32(n, lit))
        }
        Kind::Path => {
            if let Ok(lit) = syn::parse2::<LitStr>(tokens.clone()) {
                return lit.parse::<Path>().map(Value::Path).map_err(|_| {
                    syn::Error::new_spanned(
                        &lit,
                        format!("`{name}` expects a path: write `{}`", key.example),
                    )
                });
            }
            syn::parse2::<Path>(tokens.clone())
                .map(Value::Path)
                .map_err(|_| expected("a path"))
        }
        Kind::StrList => {
            let list = |input: ParseStream<'_>| -> syn::Result<Vec<LitStr>> {
                if input.peek(LitStr) {
                    return Ok(vec![input.parse()?]);
                }
                let content;
                syn::bracketed!(content in input);
                let items = Punctuated::<LitStr, Token![,]>::parse_terminated(&content)?;
                Ok(items.into_iter().collect())
            };
            list.parse2(tokens.clone())
                .map(Value::StrList)
                .map_err(|_| expected("an array of string literals"))
        }
        Kind::Flag | Kind::Misplaced(_) => Err(expected("no value")),
    }
}

fn unknown_key(name: &str, spec: &Spec) -> String {
    let mut message = format!("unknown key `{name}`; expected one of: {}", spec.expected());
    let close = spec
        .keys
        .iter()
        .filter(|k| !matches!(k.kind, Kind::Misplaced(_)))
        .map(|k| (edit_distance(name, k.name), k.name))
        .filter(|(d, k)| d * 2 <= k.len())
        .min();
    if let Some((_, suggestion)) = close {
        message.push_str(&format!(" (did you mean `{suggestion}`?)"));
    }
    message
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The longest event type, group or schedule name accepted.
pub(crate) const MAX_NAME_LEN: usize = 200;

/// Checks a name that becomes part of Redis keys and channel names:
/// `^[A-Za-z0-9][A-Za-z0-9._:-]*$`, at most 200 characters.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    const RULE: &str = "it becomes part of Redis keys and channel names, so it must start \
                        with an ASCII letter or digit and contain only ASCII letters, \
                        digits, `.`, `_`, `:` and `-` (at most 200 characters)";
    let Some(first) = name.chars().next() else {
        return Err(format!("it is empty; {RULE}"));
    };
    if !first.is_ascii_alphanumeric() {
        return Err(format!("it starts with {}; {RULE}", describe(first)));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(format!("it contains {}; {RULE}", describe(bad)));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("it is {} characters long; {RULE}", name.len()));
    }
    Ok(())
}

fn describe(c: char) -> String {
    match c {
        ' ' => "a space".to_owned(),
        '\t' | '\n' | '\r' => format!("the whitespace {c:?}"),
        '`' => "a backtick".to_owned(),
        c => format!("`{c}`"),
    }
}

/// Validates `lit` with [`check_name`]; `what` names it in the message ("event type").
pub(crate) fn validate_name(lit: &LitStr, what: &str, errors: &mut Errors) {
    if let Err(why) = check_name(&lit.value()) {
        errors.at(lit, format!("invalid {what} {:?}: {why}", lit.value()));
    }
}

/// The text of the `///` doc comments among `attrs`: one leading space
/// trimmed per line, lines joined with `\n`, the whole trimmed.
pub(crate) fn doc_text(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        let syn::Meta::NameValue(nv) = &attr.meta else {
            continue;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: Lit::Str(s), ..
        }) = &nv.value
        else {
            continue;
        };
        for line in s.value().split('\n') {
            lines.push(line.strip_prefix(' ').unwrap_or(line).to_owned());
        }
    }
    lines.join("\n").trim().to_owned()
}

/// A type that mentions `impl Trait` anywhere (`impl Event`, `Vec<impl Event>`).
pub(crate) fn find_impl_trait(tokens: TokenStream) -> Option<Span> {
    for tt in tokens {
        match tt {
            TokenTree::Ident(i) if i == "impl" => return Some(i.span()),
            TokenTree::Group(g) => {
                if let Some(span) = find_impl_trait(g.stream()) {
                    return Some(span);
                }
            }
            _ => {}
        }
    }
    None
}

/// `tokens` with every span set to `span`, so that an error in generated code
/// that names them lands under the user's token.
pub(crate) fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|tt| match tt {
            TokenTree::Group(g) => {
                let mut new = Group::new(g.delimiter(), respan(g.stream(), span));
                new.set_span(span);
                TokenTree::Group(new)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// The lints generated code may trip in user crates built with `-D warnings`.
pub(crate) fn allow_lints() -> TokenStream {
    quote! {
        #[allow(
            deprecated,
            non_upper_case_globals,
            non_snake_case,
            unused_qualifications,
            clippy::all
        )]
    }
}

/// `::core::option::Option::Some(x)` or `::core::option::Option::None`.
pub(crate) fn option(value: Option<TokenStream>) -> TokenStream {
    match value {
        Some(v) => quote!(::core::option::Option::Some(#v)),
        None => quote!(::core::option::Option::None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: Spec = Spec {
        attr: "#[handler(...)]",
        keys: &[
            Key::new("group", Kind::Str, "group = \"name\""),
            Key::new("retries", Kind::U32, "retries = 5"),
            Key::new("all", Kind::Flag, "all"),
            Key::new("aliases", Kind::StrList, "aliases = [\"old\"]"),
            Key::new("crate", Kind::Path, "crate = ::eventbus"),
        ],
        positional: false,
    };

    fn parse(tokens: TokenStream) -> (Args, Vec<String>) {
        let mut args = Args::default();
        let mut errors = Errors::default();
        args.parse_into(tokens, &SPEC, &mut errors);
        let messages = match errors.finish() {
            Ok(()) => Vec::new(),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        };
        (args, messages)
    }

    #[test]
    fn parses_every_kind() {
        let (args, errors) = parse(quote!(
            group = "q",
            retries = 5u32,
            all,
            aliases = ["a", "b"],
            crate = ::x::y
        ));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.str("group").map(LitStr::value).as_deref(), Some("q"));
        assert_eq!(args.u32("retries").map(|(n, _)| n), Some(5));
        assert!(args.flag("all"));
        let aliases: Vec<String> = args
            .str_list("aliases")
            .unwrap()
            .iter()
            .map(LitStr::value)
            .collect();
        assert_eq!(aliases, ["a", "b"]);
        assert_eq!(args.krate().to_string(), ":: x :: y");
    }

    #[test]
    fn crate_path_as_string() {
        let (args, errors) = parse(quote!(crate = "::x"));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(args.krate().to_string(), ":: x");
    }

    #[test]
    fn reports_every_error_and_keeps_going() {
        let (args, errors) = parse(quote!(
            grop = "q",
            retries = "five",
            all = true,
            group = "ok",
            group = "again",
            retries = 6
        ));
        assert_eq!(
            errors,
            [
                "unknown key `grop`; expected one of: `group`, `retries`, `all`, `aliases`, `crate` (did you mean `group`?)",
                "`retries` expects a whole number: write `retries = 5`",
                "`all` takes no value: write `all`",
                "duplicate key `group`: it is already set in this attribute",
                "duplicate key `retries`: it is already set in this attribute",
            ]
        );
        let (_, errors) = parse(quote!(retries = 300000000000, group = 1));
        assert_eq!(
            errors,
            [
                "`retries` is too large for a u32",
                "`group` expects a string literal: write `group = \"name\"`",
            ]
        );
        assert_eq!(args.str("group").map(LitStr::value).as_deref(), Some("ok"));
    }

    #[test]
    fn missing_value() {
        let (_, errors) = parse(quote!(group, retries =));
        assert_eq!(
            errors,
            [
                "`group` needs a value: write `group = \"name\"`",
                "expected a value after `=`: write `retries = 5`",
            ]
        );
    }

    #[test]
    fn names() {
        for ok in [
            "review_created",
            "a",
            "0",
            "com.example.review-created:v1",
            &"x".repeat(200),
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "_x",
            "-x",
            "review created",
            "a/b",
            "é",
            "a*",
            &"x".repeat(201),
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(
            check_name("review created")
                .unwrap_err()
                .starts_with("it contains a space;")
        );
    }

    #[test]
    fn docs() {
        let attrs: Vec<syn::Attribute> = vec![
            syn::parse_quote!(#[doc = " Triggered when"]),
            syn::parse_quote!(#[doc = "  indented"]),
            syn::parse_quote!(#[doc = ""]),
            syn::parse_quote!(#[derive(Debug)]),
            syn::parse_quote!(#[doc = " end. "]),
        ];
        assert_eq!(doc_text(&attrs), "Triggered when\n indented\n\nend.");
        assert_eq!(doc_text(&[]), "");
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("retry", "retries"), 3);
        assert!(unknown_key("retry", &SPEC).ends_with("(did you mean `retries`?)"));
        assert!(!unknown_key("bar", &SPEC).contains("did you mean"));
        assert_eq!(edit_distance("group", "group"), 0);
        assert_eq!(edit_distance("", "all"), 3);
    }

    #[test]
    fn impl_trait() {
        assert!(find_impl_trait(quote!(Vec<impl Event>)).is_some());
        assert!(find_impl_trait(quote!(Option<(u8, impl X)>)).is_some());
        assert!(find_impl_trait(quote!(Implement)).is_none());
    }
}
