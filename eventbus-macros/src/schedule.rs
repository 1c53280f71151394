//! `#[schedule(every = "1h")]` / `#[schedule(cron = "0 9 * * MON", tz = "Europe/Berlin")]`
//! on a fn that returns the event to publish.
//!
//! The interval, cron expression and zone are checked here, each error under
//! its literal; the interval is handed over in milliseconds, so the running
//! schedule never parses it again.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ItemFn, LitStr, ReturnType};

use crate::attr::{
    Args, Errors, Key, Kind, Spec, allow_lints, find_impl_trait, respan, validate_name,
};

const SPEC: Spec = Spec {
    attr: "#[schedule(...)]",
    keys: &[
        Key::new("every", Kind::Str, "every = \"1h\""),
        Key::new("cron", Kind::Str, "cron = \"0 9 * * MON\""),
        Key::new("tz", Kind::Str, "tz = \"Europe/Berlin\""),
        Key::new("name", Kind::Str, "name = \"hourly_digest\""),
        Key::new("crate", Kind::Path, "crate = ::eventbus"),
    ],
    positional: false,
};

const USAGE: &str = "a schedule needs `every = \"1h\"` (an interval) or `cron = \"0 9 * * MON\"` (a cron expression, UTC unless `tz = \"...\"` names a zone)";

/// When the schedule fires, as validated.
enum When<'a> {
    /// The interval as written, and in milliseconds.
    Every(&'a LitStr, u64),
    /// The cron expression and the zone, if one is named.
    Cron(&'a LitStr, Option<&'a LitStr>),
}

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut parsed = Args::default();
    parsed.parse_into(args, &SPEC, &mut errors);
    let when = check_when(&parsed, &mut errors);
    if let Some(name) = parsed.str("name") {
        validate_name(name, "schedule name", &mut errors);
    }

    let func: ItemFn = match syn::parse2(item) {
        Ok(func) => func,
        Err(_) => {
            return errors.fail(syn::Error::new(
                Span::call_site(),
                "#[schedule] goes on a fn that returns the event to publish: `fn hourly_digest() -> Digest`",
            ));
        }
    };
    let sig = &func.sig;
    if !sig.inputs.is_empty() {
        errors.at(
            &sig.inputs,
            "a schedule function takes no arguments: it returns the event to publish",
        );
    }
    const GENERIC: &str = "a schedule function cannot be generic";
    if !sig.generics.params.is_empty() {
        errors.at(&sig.generics, GENERIC);
    } else if let Some(where_clause) = &sig.generics.where_clause {
        errors.at(where_clause, GENERIC);
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at(unsafety, "a schedule function cannot be an `unsafe fn`");
    }
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => {
            if let Some(span) = find_impl_trait(ty.to_token_stream()) {
                errors.at_span(
                    span,
                    "a schedule function cannot return `impl Trait`: name the event type",
                );
            }
            Some(ty)
        }
        ReturnType::Default => {
            errors.at(
                sig,
                "a schedule function must return the event to publish: add `-> MyEvent` or `-> Result<MyEvent, E>`",
            );
            None
        }
    };
    errors.finish()?;
    let (Some(ret), Some(when)) = (ret, when) else {
        // Unreachable: both are errors above.
        return Err(syn::Error::new(Span::call_site(), USAGE));
    };

    let krate = parsed.krate();
    let ident = &sig.ident;
    let name = match parsed.str("name") {
        Some(name) => name.clone(),
        None => LitStr::new(&ident.unraw().to_string(), ident.span()),
    };
    let call = match sig.asyncness {
        Some(_) => quote!(#ident().await),
        None => quote!(#ident()),
    };
    let (constructor, when) = match when {
        When::Every(lit, ms) => (quote!(__every), quote!(#lit, #ms)),
        When::Cron(lit, tz) => {
            let tz = match tz {
                Some(tz) => quote!(::core::option::Option::Some(#tz)),
                None => quote!(::core::option::Option::None),
            };
            (quote!(__cron), quote!(#lit, #tz))
        }
    };
    // Both uses of the return type are spanned at it and live in one body, so
    // that rustc reports "a schedule must return an event" once, under it.
    let ret_span = ret.span();
    let ret_krate = respan(krate.clone(), ret_span);
    let event_type = quote_spanned! {ret_span=>
        __eventbus_event_type::<#ret>()
    };
    let publish = quote_spanned! {ret_span=>
        #ret_krate::__private::publish_output::<#ret>(bus, #name, #call).await
    };
    let allow = allow_lints();

    Ok(quote! {
        #func

        #allow
        const _: () = {
            fn __eventbus_event_type<O: #krate::__private::ScheduleOutput>() -> &'static str {
                <<O as #krate::__private::ScheduleOutput>::Event as #krate::Event>::TYPE
            }

            fn __eventbus_def() -> #krate::__private::ScheduleDef {
                #krate::__private::ScheduleDef::#constructor(
                    #name,
                    ::core::module_path!(),
                    #when,
                    #event_type,
                    |bus: #krate::__private::Bus| {
                        #krate::__private::boxed(async move {
                            #publish
                        })
                    },
                )
            }

            #krate::__private::inventory::submit! {
                #krate::__private::ScheduleRegistration(__eventbus_def)
            }
        };
    })
}

/// Checks `every` / `cron` / `tz`: exactly one of `every` and `cron`, `tz`
/// only with `cron`, each valid.
fn check_when<'a>(args: &'a Args, errors: &mut Errors) -> Option<When<'a>> {
    let mut given = args
        .entries
        .iter()
        .filter(|e| e.name == "every" || e.name == "cron");
    if let (Some(_), Some(later)) = (given.next(), given.next()) {
        errors.at(
            &later.key,
            "`every` and `cron` cannot be used together: pick one",
        );
        return None;
    }
    let tz = args.get("tz").map(|entry| (entry, args.str("tz")));
    if let Some(lit) = args.str("every") {
        if let Some((entry, _)) = tz {
            errors.at(
                &entry.key,
                "`tz` goes with `cron`: an `every` interval is aligned to the Unix epoch, the same in every zone",
            );
        }
        match humantime::parse_duration(&lit.value()) {
            Err(e) => errors.at(
                lit,
                format!(
                    "invalid interval {:?}: {e}; write e.g. \"30s\", \"5m\" or \"1h 30m\"",
                    lit.value()
                ),
            ),
            Ok(d) if d.is_zero() => errors.at(lit, "the interval must be longer than zero"),
            Ok(d) => match u64::try_from(d.as_millis()) {
                Ok(0) => errors.at(
                    lit,
                    "the interval must be at least 1 ms: ticks are counted in milliseconds",
                ),
                Ok(ms) => return Some(When::Every(lit, ms)),
                Err(_) => errors.at(lit, "the interval is too long"),
            },
        }
        return None;
    }
    if let Some(lit) = args.str("cron") {
        let tz = match tz {
            Some((_, Some(tz))) => match check_tz(&tz.value()) {
                Ok(()) => Some(Some(tz)),
                Err(e) => {
                    errors.at(tz, e);
                    None
                }
            },
            // Not a string: already reported.
            Some((_, None)) => None,
            None => Some(None),
        };
        let parsed = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .build()
            .parse(&lit.value());
        match parsed {
            Err(e) => errors.at(
                lit,
                format!(
                    "invalid cron expression {:?}: {e}; write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, e.g. \"0 9 * * MON\"",
                    lit.value()
                ),
            ),
            Ok(_) => return tz.map(|tz| When::Cron(lit, tz)),
        }
        return None;
    }
    if !args.seen.iter().any(|k| k == "every" || k == "cron") {
        errors.at_span(Span::call_site(), USAGE);
    }
    None
}

/// Checks an IANA zone name the way the running schedule parses it.
fn check_tz(name: &str) -> Result<(), String> {
    if name.parse::<chrono_tz::Tz>().is_ok() {
        return Ok(());
    }
    match chrono_tz::TZ_VARIANTS
        .iter()
        .find(|tz| tz.name().eq_ignore_ascii_case(name))
    {
        Some(tz) => Err(format!(
            "unknown time zone {name:?}; did you mean {:?}?",
            tz.name()
        )),
        None => Err(format!(
            "unknown time zone {name:?}; write an IANA zone name such as \"Europe/Berlin\" or \"UTC\""
        )),
    }
}
