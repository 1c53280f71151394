//! `#[handler]` on an `async fn`.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, ReturnType, Signature};

use crate::attr::{
    Args, Errors, Key, Kind, Spec, allow_lints, find_impl_trait, option, respan, validate_name,
};

const SPEC: Spec = Spec {
    attr: "#[handler(...)]",
    keys: &[
        Key::new("group", Kind::Str, "group = \"sms_send_queue\""),
        Key::new("retries", Kind::U32, "retries = 5"),
        Key::new("concurrency", Kind::U32, "concurrency = 8"),
        Key::new("all", Kind::Flag, "all"),
        Key::new("broadcast", Kind::Flag, "broadcast"),
        Key::new("crate", Kind::Path, "crate = ::eventbus"),
    ],
    positional: false,
};

pub(crate) fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let mut parsed = Args::default();
    parsed.parse_into(args, &SPEC, &mut errors);
    if let Some(group) = parsed.str("group") {
        validate_name(group, "group", &mut errors);
    }
    if let Some((0, lit)) = parsed.u32("concurrency") {
        errors.at(lit, "`concurrency` must be at least 1");
    }

    let func: ItemFn = match syn::parse2(item) {
        Ok(func) => func,
        Err(_) => {
            return errors.fail(syn::Error::new(
                Span::call_site(),
                "#[handler] goes on an `async fn`: `async fn on_event(event: MyEvent, ctx: Context) -> anyhow::Result<()>`",
            ));
        }
    };
    check_signature(&func.sig, &mut errors);
    errors.finish()?;

    let krate = parsed.krate();
    let sig = &func.sig;
    let ident = &sig.ident;
    let name = ident.unraw().to_string();
    let all = parsed.flag("all");
    let broadcast = parsed.flag("broadcast");

    let mut checks = Vec::new();
    for (index, arg) in sig.inputs.iter().enumerate() {
        let FnArg::Typed(arg) = arg else { continue };
        let ty = &arg.ty;
        let span = ty.span();
        let krate = respan(krate.clone(), span);
        let check = match (index, all) {
            (0, false) => quote_spanned!(span=> event_arg),
            (0, true) => quote_spanned!(span=> global_arg),
            _ => quote_spanned!(span=> context_arg),
        };
        checks.push(quote_spanned! {span=>
            #krate::__private::check::#check::<#ty>();
        });
    }
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => ty.to_token_stream(),
        ReturnType::Default => quote!(()),
    };
    let ret_span = ret.span();
    let ret_krate = respan(krate.clone(), ret_span);
    checks.push(quote_spanned! {ret_span=>
        #ret_krate::__private::check::return_type::<#ret>();
    });

    let group = option(parsed.str("group").map(ToTokens::to_token_stream));
    let retries = option(parsed.u32("retries").map(|(n, _)| quote!(#n)));
    let concurrency = option(parsed.u32("concurrency").map(|(n, _)| quote!(#n)));
    let allow = allow_lints();

    Ok(quote! {
        #func

        #allow
        const _: () = {
            fn __eventbus_check() {
                #(#checks)*
            }

            fn __eventbus_build() -> #krate::__private::HandlerDef {
                #krate::__private::HandlerDef::__from_macro(
                    #ident,
                    #krate::__private::HandlerMeta::__new(
                        #name,
                        ::core::module_path!(),
                        #group,
                        #retries,
                        #concurrency,
                        #all,
                        #broadcast,
                    ),
                )
            }

            #krate::__private::inventory::submit! {
                #krate::__private::HandlerRegistration(__eventbus_build)
            }
        };
    })
}

fn check_signature(sig: &Signature, errors: &mut Errors) {
    if sig.asyncness.is_none() {
        errors.at(
            sig.fn_token,
            "a handler must be an `async fn`: write `async fn`",
        );
    }
    if let Some(constness) = &sig.constness {
        errors.at(constness, "a handler cannot be a `const fn`");
    }
    if let Some(unsafety) = &sig.unsafety {
        errors.at(unsafety, "a handler cannot be an `unsafe fn`");
    }
    if let Some(abi) = &sig.abi {
        errors.at(abi, "a handler cannot have an `extern` ABI");
    }
    const GENERIC: &str = "a handler cannot be generic: the bus must know the event type it takes";
    if !sig.generics.params.is_empty() {
        errors.at(&sig.generics, GENERIC);
    } else if let Some(where_clause) = &sig.generics.where_clause {
        errors.at(where_clause, GENERIC);
    }
    if sig.inputs.is_empty() {
        errors.at_span(
            sig.paren_token.span.join(),
            "a handler takes the event as its first argument: `(event: MyEvent)` or `(event: MyEvent, ctx: Context)`",
        );
    }
    if sig.inputs.len() > 2 {
        let extra = sig.inputs.iter().skip(2);
        errors.at(
            quote!(#(#extra),*),
            "a handler takes at most two arguments: the event and `Context`; read app state with `ctx.state::<T>()`",
        );
    }
    for arg in sig.inputs.iter().take(2) {
        match arg {
            FnArg::Receiver(receiver) => errors.at(
                receiver,
                "a handler is a free function: it cannot take `self`",
            ),
            FnArg::Typed(arg) => {
                if let Some(span) = find_impl_trait(arg.ty.to_token_stream()) {
                    errors.at_span(
                        span,
                        "a handler argument cannot be `impl Trait`: name the event type",
                    );
                }
            }
        }
    }
    if let Some(variadic) = &sig.variadic {
        errors.at(variadic, "a handler cannot be variadic");
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && let Some(span) = find_impl_trait(ty.to_token_stream())
    {
        errors.at_span(
            span,
            "a handler cannot return `impl Trait`: return `()` or `Result<(), E>`",
        );
    }
}
