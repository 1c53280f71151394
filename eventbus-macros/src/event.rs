//! `#[derive(Event)]` with `#[event("type", ...)]` and `#[event(subject)]`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, Data, DeriveInput, Field, Lit, LitStr, Member, Meta};

use crate::attr::{
    Args, Errors, Key, Kind, Spec, allow_lints, doc_text, option, respan, validate_name,
};

const TYPE_SPEC: Spec = Spec {
    attr: "#[event(...)]",
    keys: &[
        Key::new("source", Kind::Str, "source = \"reviews\""),
        Key::new(
            "deprecated",
            Kind::Str,
            "deprecated = \"use moderate_action\"",
        ),
        Key::new("replaced_by", Kind::Path, "replaced_by = ModerateAction"),
        Key::new("aliases", Kind::StrList, "aliases = [\"old_name\"]"),
        Key::new("crate", Kind::Path, "crate = ::eventbus"),
        Key::new("celery", Kind::Flag, "celery"),
        Key::new("queue", Kind::Str, "queue = \"sms_send_queue\""),
        Key::new("result", Kind::Flag, "result"),
        Key::new(
            "subject",
            Kind::Misplaced(
                "`subject` marks a field: put `#[event(subject)]` on the field that holds the CloudEvents subject",
            ),
            "",
        ),
    ],
    positional: true,
};

const FIELD_SPEC: Spec = Spec {
    attr: "#[event(...)] on a field",
    keys: &[Key::new("subject", Kind::Flag, "#[event(subject)]")],
    positional: false,
};

const MISSING_TYPE: &str = "missing the event type: write #[event(\"type_name\")]";

fn is_event_attr(attr: &&Attribute) -> bool {
    attr.path().is_ident("event")
}

/// The field marked `#[event(subject)]`.
struct Subject<'a> {
    member: Member,
    name: String,
    field: &'a Field,
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();

    let generics = &input.generics;
    const GENERIC: &str =
        "an event type cannot be generic: its CloudEvents type is fixed per Rust type";
    if !generics.params.is_empty() {
        errors.at(generics, GENERIC);
    } else if let Some(where_clause) = &generics.where_clause {
        errors.at(where_clause, GENERIC);
    }

    let mut args = Args::default();
    let mut first_attr = None;
    for attr in input.attrs.iter().filter(is_event_attr) {
        first_attr.get_or_insert(attr);
        match &attr.meta {
            Meta::List(list) => args.parse_into(list.tokens.clone(), &TYPE_SPEC, &mut errors),
            Meta::Path(_) => {} // reported as a missing type below
            Meta::NameValue(_) => errors.at(
                attr,
                "write the event type in parentheses: #[event(\"type_name\")]",
            ),
        }
    }
    let type_name: Option<LitStr> = match (args.positional.first(), first_attr) {
        (Some(Lit::Str(s)), _) => {
            validate_name(s, "event type", &mut errors);
            Some(s.clone())
        }
        (Some(other), _) => {
            errors.at(
                other,
                "the event type is a string literal: write #[event(\"type_name\")]",
            );
            None
        }
        (None, Some(_)) if args.bare_positional => None,
        (None, Some(attr)) => {
            errors.at(attr, MISSING_TYPE);
            None
        }
        (None, None) => {
            errors.at_span(Span::call_site(), MISSING_TYPE);
            None
        }
    };
    for extra in args.positional.iter().skip(1) {
        errors.at(
            extra,
            "the event type is already given; other options are written `key = value`",
        );
    }
    for alias in args.str_list("aliases").unwrap_or_default() {
        validate_name(alias, "alias", &mut errors);
        if type_name
            .as_ref()
            .is_some_and(|t| t.value() == alias.value())
        {
            errors.at(alias, "an alias cannot be the event type itself");
        }
    }

    let celery = args.flag("celery");
    if !celery && let Some(queue) = args.str("queue") {
        errors.at(
                queue,
                "`queue` names the Celery queue of a task: add `celery` (#[event(\"name\", celery, queue = \"...\")])",
            );
    }
    if let Some(queue) = args.str("queue") {
        validate_name(queue, "Celery queue", &mut errors);
    }
    let store_result = args.flag("result");
    if let (true, false, Some(entry)) = (store_result, celery, args.get("result")) {
        errors.at(
            &entry.key,
            "`result` stores the result of a Celery task: add `celery` (#[event(\"name\", celery, result)])",
        );
    }

    let subject = find_subject(input, &mut errors);
    errors.finish()?;
    let Some(type_name) = type_name else {
        // Unreachable: a missing type name is an error above.
        return Err(syn::Error::new(Span::call_site(), MISSING_TYPE));
    };

    let krate = args.krate();
    let ident = &input.ident;
    let rust_name = ident.unraw().to_string();
    let source = option(args.str("source").map(ToTokens::to_token_stream));
    let description = doc_text(&input.attrs);
    let deprecated = option(args.str("deprecated").map(ToTokens::to_token_stream));
    let replaced_by_path = args.path("replaced_by");
    let replaced_by = option(replaced_by_path.map(|path| {
        let span = path.span();
        let krate = respan(krate.clone(), span);
        quote_spanned!(span=> <#path as #krate::Event>::TYPE)
    }));
    let upcast = option(replaced_by_path.map(|path| {
        let span = path.span();
        let krate = respan(krate.clone(), span);
        quote_spanned!(span=> #krate::__private::upcast::<#ident, #path> as #krate::event::Upcast)
    }));
    let aliases = args.str_list("aliases").unwrap_or_default();
    let subject_field = option(subject.as_ref().map(|s| s.name.to_token_stream()));
    let subject_fn = subject.map(|Subject { member, field, .. }| {
        // An `Option<T>` field gives no subject when it is `None`.
        let value = if is_option(&field.ty) {
            quote!(::core::option::Option::as_ref(&self.#member))
        } else {
            quote!(::core::option::Option::Some(&self.#member))
        };
        // Spanned at the field so that "doesn't implement `Display`" lands there.
        quote_spanned! {field.ty.span()=>
            fn subject(&self) -> ::core::option::Option<impl ::core::fmt::Display + '_> {
                #value
            }
        }
    });
    let task = celery.then(|| {
        let queue = option(args.str("queue").map(ToTokens::to_token_stream));
        quote!(.__with_task(#krate::__private::TaskInfo::__new(#queue, #store_result)))
    });
    let allow = allow_lints();

    let schema_check = quote_spanned! {ident.span()=>
        let _ = #krate::__private::check::json_schema::<#ident>;
    };

    Ok(quote! {
        #allow
        const _: () = {
            #schema_check
            static __EVENTBUS_INFO: #krate::__private::EventInfo = #krate::__private::EventInfo::__new(
                #type_name,
                ::core::concat!(::core::module_path!(), "::", #rust_name),
                #source,
                #description,
                #deprecated,
                #replaced_by,
                &[#(#aliases),*],
                #subject_field,
                #krate::__private::schema_of::<#ident>,
                #upcast,
            )#task;

            impl #krate::Event for #ident {
                const TYPE: &'static str = #type_name;

                fn info() -> &'static #krate::__private::EventInfo {
                    &__EVENTBUS_INFO
                }

                #subject_fn
            }

            #krate::__private::inventory::submit! {
                #krate::__private::EventRegistration(&__EVENTBUS_INFO)
            }
        };
    })
}

/// Finds the `#[event(subject)]` field and reports misplaced `#[event]`s.
fn find_subject<'a>(input: &'a DeriveInput, errors: &mut Errors) -> Option<Subject<'a>> {
    let mut subject: Option<Subject<'a>> = None;
    match &input.data {
        Data::Struct(data) => {
            for (index, field) in data.fields.iter().enumerate() {
                for attr in field.attrs.iter().filter(is_event_attr) {
                    let mut args = Args::default();
                    match &attr.meta {
                        Meta::List(list) => {
                            args.parse_into(list.tokens.clone(), &FIELD_SPEC, errors)
                        }
                        _ => errors.at(attr, "write #[event(subject)]"),
                    }
                    let Some(entry) = args.get("subject") else {
                        continue;
                    };
                    if let Some(prev) = &subject {
                        errors.at(
                            &entry.key,
                            format!(
                                "only one field can be the subject: `{}` is already marked #[event(subject)]",
                                prev.name
                            ),
                        );
                        continue;
                    }
                    let (member, name) = match &field.ident {
                        Some(ident) => (Member::Named(ident.clone()), ident.unraw().to_string()),
                        None => (
                            Member::Unnamed(syn::Index {
                                index: index as u32,
                                span: field.ty.span(),
                            }),
                            index.to_string(),
                        ),
                    };
                    subject = Some(Subject {
                        member,
                        name,
                        field,
                    });
                }
            }
        }
        Data::Enum(data) => {
            for variant in &data.variants {
                for attr in variant.attrs.iter().filter(is_event_attr) {
                    errors.at(
                        attr,
                        "#[event(...)] goes on the enum itself, not on a variant",
                    );
                }
                for field in &variant.fields {
                    for attr in field.attrs.iter().filter(is_event_attr) {
                        errors.at(
                            attr,
                            "#[event(subject)] is not supported on enums: the subject is read from one field of a struct",
                        );
                    }
                }
            }
        }
        Data::Union(data) => errors.at(
            data.union_token,
            "an event cannot be a union: derive `Event` for a struct or an enum",
        ),
    }
    subject
}

/// `Option<T>` (or `std::option::Option<T>`, `core::option::Option<T>`).
fn is_option(ty: &syn::Type) -> bool {
    let syn::Type::Path(syn::TypePath { qself: None, path }) = ty else {
        return false;
    };
    let Some(last) = path.segments.last() else {
        return false;
    };
    let prefix: Vec<String> = path
        .segments
        .iter()
        .take(path.segments.len() - 1)
        .map(|s| s.ident.to_string())
        .collect();
    last.ident == "Option"
        && matches!(&last.arguments, syn::PathArguments::AngleBracketed(args) if args.args.len() == 1)
        && (prefix.is_empty() || prefix == ["std", "option"] || prefix == ["core", "option"])
}
