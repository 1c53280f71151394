//! `eventbus/METRICS.md` holds the table generated from `METRICS`;
//! `EVENTBUS_UPDATE_DOCS=1` rewrites it.

const BEGIN: &str =
    "<!-- metrics table: generated from eventbus::metrics::METRICS by tests/metrics/docs.rs -->\n";
const END: &str = "<!-- end of metrics table -->";

#[test]
fn the_metrics_table_in_the_docs_is_generated_from_metrics() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("METRICS.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let table = eventbus::metrics::markdown_table();
    let expected = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{BEGIN}{table}{}", &doc[..b], &doc[e..])
        }
        _ => format!("# Metrics\n\n{BEGIN}{table}{END}\n"),
    };
    if std::env::var_os("EVENTBUS_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &expected).unwrap();
        return;
    }
    assert!(
        doc == expected,
        "{} is out of date with eventbus::metrics::METRICS; run the test with EVENTBUS_UPDATE_DOCS=1 to regenerate it",
        path.display()
    );
}
