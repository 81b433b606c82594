//! The message catalog: every sentence a run's status says to people, as a
//! message id with parameters, rendered from a template per language.
//!
//! - Ids are stable: a message id always means the same thing. A template
//!   whose wording changes gets a new entry with the catalog version it
//!   changed in (`since`), and the old entry stays.
//! - A run records the catalog version it was accepted under
//!   (`run-accepted`'s `catalog`); its phrases are rendered with the
//!   newest template of each id no newer than that version, so what a
//!   person was told about a run does not change under them when the
//!   catalog does.
//! - The language is chosen per request (`Accept-Language`); English is
//!   the default and the fallback. Parameters that come from plugins,
//!   downstream systems or operators (a drift detail, a hold reason) are
//!   passed through as they were written.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The catalog version this host writes into new runs.
pub const CATALOG_VERSION: u32 = 1;

/// A language the catalog has templates in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    En,
    De,
}

impl Lang {
    pub const ALL: [Lang; 2] = [Lang::En, Lang::De];

    /// The BCP 47 tag (`Content-Language`).
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::De => "de",
        }
    }

    /// The best language for an `Accept-Language` header: the supported
    /// one with the highest weight, English when none is (or no header).
    /// Reads at most the first 32 entries.
    pub fn negotiate(header: Option<&str>) -> Lang {
        let Some(header) = header else {
            return Lang::En;
        };
        let mut best: Option<(f32, Lang)> = None;
        for entry in header.split(',').take(32) {
            let mut parts = entry.split(';');
            let range = parts.next().unwrap_or_default().trim();
            let weight = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())
                .filter(|q| q.is_finite() && *q > 0.0 && *q <= 1.0);
            let primary = range.split('-').next().unwrap_or_default();
            let lang = Lang::ALL
                .into_iter()
                .find(|l| l.tag().eq_ignore_ascii_case(primary));
            if let (Some(weight), Some(lang)) = (weight, lang)
                && best.is_none_or(|(w, _)| weight > w)
            {
                best = Some((weight, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }
}

/// One sentence: an id from the catalog and its parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Param>,
}

/// A parameter: text as written, or messages rendered in the same language
/// (one after the other).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Param {
    Text(String),
    Messages(Vec<Message>),
}

impl Message {
    pub fn new(id: &str) -> Self {
        Message {
            id: id.to_string(),
            params: BTreeMap::new(),
        }
    }

    /// With parameter `name` set to `value` as text.
    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.params
            .insert(name.to_string(), Param::Text(value.to_string()));
        self
    }

    /// With parameter `name` set to `messages`, rendered one after another.
    pub fn with_messages(mut self, name: &str, messages: Vec<Message>) -> Self {
        self.params
            .insert(name.to_string(), Param::Messages(messages));
        self
    }

    /// The sentence in `lang`, with the templates of catalog `catalog`.
    pub fn render(&self, lang: Lang, catalog: u32) -> String {
        self.render_depth(lang, catalog, 0)
    }

    fn render_depth(&self, lang: Lang, catalog: u32, depth: usize) -> String {
        let Some(template) = template(&self.id, catalog, lang) else {
            // An id this host does not know (written by a newer one): the
            // id and its text parameters, rather than nothing.
            return self.id.clone();
        };
        let mut out = String::with_capacity(template.len() + 32);
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                rest = "";
                break;
            };
            let name = &after[..close];
            match self.params.get(name) {
                Some(Param::Text(text)) => out.push_str(text),
                // Nesting is bounded: the catalog's own composition is two
                // levels deep; a hostile value could not be deeper than 8.
                Some(Param::Messages(list)) if depth < 8 => {
                    for m in list {
                        out.push_str(&m.render_depth(lang, catalog, depth + 1));
                    }
                }
                _ => {}
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// One wording of a message, from catalog version `since` on.
struct Template {
    id: &'static str,
    since: u32,
    en: &'static str,
    de: &'static str,
}

/// The newest template of `id` no newer than `catalog`, in `lang`. A run
/// recorded before catalogs existed (version 0) reads version 1, whose
/// English is what hosts said before.
fn template(id: &str, catalog: u32, lang: Lang) -> Option<&'static str> {
    template_in(CATALOG, id, catalog, lang)
}

fn template_in(
    templates: &'static [Template],
    id: &str,
    catalog: u32,
    lang: Lang,
) -> Option<&'static str> {
    let catalog = catalog.max(1);
    let of_id = || templates.iter().filter(move |t| t.id == id);
    let found = of_id()
        .filter(|t| t.since <= catalog)
        .max_by_key(|t| t.since)
        // A version newer than this host knows: its newest wording.
        .or_else(|| of_id().max_by_key(|t| t.since))?;
    Some(match lang {
        Lang::En => found.en,
        Lang::De => found.de,
    })
}

/// Every message id, as listed in the catalog (for tests and docs).
pub fn ids() -> impl Iterator<Item = &'static str> {
    CATALOG.iter().map(|t| t.id)
}

const fn t(id: &'static str, en: &'static str, de: &'static str) -> Template {
    Template {
        id,
        since: 1,
        en,
        de,
    }
}

/// The catalog. Parameters in braces.
const CATALOG: &[Template] = &[
    t(
        "run.waiting",
        "Waiting: {reason}; next try in {seconds} s",
        "Wartet: {reason}; nächster Versuch in {seconds} s",
    ),
    t(
        "run.waiting-for-go",
        "Waiting: {reason}; the next try goes once it lets one through",
        "Wartet: {reason}; der nächste Versuch startet, sobald einer durchgelassen wird",
    ),
    t(
        "run.pausing",
        "Waiting until {until}, as the flow asks (step {step}); {seconds} s from now",
        "Wartet bis {until}, wie der Ablauf es vorsieht (Schritt {step}); noch {seconds} s",
    ),
    t(
        "run.awaiting-approval",
        "Waiting for approval (step {step}): {given} of {needed} given; it waits until {until}",
        "Wartet auf Freigabe (Schritt {step}): {given} von {needed} erteilt; längstens bis {until}",
    ),
    t(
        "run.awaiting-signal",
        "Waiting for '{signal}' (step {step}); it waits until {until}",
        "Wartet auf '{signal}' (Schritt {step}); längstens bis {until}",
    ),
    t("run.accepted", "Request accepted", "Anfrage angenommen"),
    t(
        "run.retrying",
        "Retrying {step} (attempt {attempt} of {max_attempts}) in {seconds} s",
        "Neuer Versuch für {step} (Versuch {attempt} von {max_attempts}) in {seconds} s",
    ),
    t(
        "run.repairing",
        "Repairing: a downstream system disagreed, so {step} runs again (step {number} of {count})",
        "Reparatur: ein nachgelagertes System war anderer Meinung, daher läuft {step} erneut (Schritt {number} von {count})",
    ),
    t(
        "run.processing",
        "Processing: step {number} of {count} ({step})",
        "In Bearbeitung: Schritt {number} von {count} ({step})",
    ),
    t(
        "run.compensating",
        "Undoing completed steps",
        "Abgeschlossene Schritte werden rückgängig gemacht",
    ),
    t(
        "run.confirming",
        "Done; confirming with downstream systems",
        "Erledigt; wird mit den nachgelagerten Systemen abgeglichen",
    ),
    t(
        "run.settled-confirmed",
        "Completed and confirmed",
        "Abgeschlossen und bestätigt",
    ),
    t(
        "run.settled-unconfirmed",
        "Completed (not independently confirmed)",
        "Abgeschlossen (nicht unabhängig bestätigt)",
    ),
    t(
        "run.compensated-nothing-changed",
        "Could not complete; nothing had been changed",
        "Konnte nicht abgeschlossen werden; es war noch nichts geändert worden",
    ),
    t(
        "run.compensated-all-undone",
        "Could not complete; all changes were undone",
        "Konnte nicht abgeschlossen werden; alle Änderungen wurden rückgängig gemacht",
    ),
    t(
        "run.compensated-none-undone",
        "Could not complete; nothing was undone{left}",
        "Konnte nicht abgeschlossen werden; nichts wurde rückgängig gemacht{left}",
    ),
    t(
        "run.compensated-some-undone",
        "Could not complete; undone: {undone}{left}",
        "Konnte nicht abgeschlossen werden; rückgängig gemacht: {undone}{left}",
    ),
    t(
        "run.drifted",
        "Completed, but a downstream system disagrees ({detail}); waiting for an operator to decide",
        "Abgeschlossen, aber ein nachgelagertes System ist anderer Meinung ({detail}); wartet auf die Entscheidung eines Operators",
    ),
    t(
        "run.drifted-no-detail",
        "Completed, but a downstream system disagrees; waiting for an operator to decide",
        "Abgeschlossen, aber ein nachgelagertes System ist anderer Meinung; wartet auf die Entscheidung eines Operators",
    ),
    t(
        "run.held",
        "Stopped: an operator must act: {reason}",
        "Angehalten: ein Operator muss handeln: {reason}",
    ),
    t(
        "run.held-no-reason",
        "Stopped: an operator must act",
        "Angehalten: ein Operator muss handeln",
    ),
    t("run.cancelled", "Cancelled{left}", "Abgebrochen{left}"),
    t("run.state", "{state}", "{state}"),
    t(
        "clause.left-in-place",
        "; left in place: {steps}",
        "; bestehen geblieben: {steps}",
    ),
    t(
        "clause.maybe-left-in-place",
        "; may have been left in place: {steps}",
        "; möglicherweise bestehen geblieben: {steps}",
    ),
    t(
        "clause.earlier-runs-left",
        "; earlier runs left in place: {steps}",
        "; aus früheren Durchläufen bestehen geblieben: {steps}",
    ),
    t(
        "expect.no-estimate",
        "no estimate yet: {runs} run(s) of this flow have settled, {needed} are needed",
        "noch keine Schätzung: {runs} Lauf/Läufe dieses Ablaufs abgeschlossen, {needed} werden benötigt",
    ),
    t(
        "expect.usually",
        "usually completes within {within} ({percent} % of the last {runs} runs)",
        "dauert meist höchstens {within} ({percent} % der letzten {runs} Läufe)",
    ),
    t(
        "expect.overdue",
        "taking longer than usual ({percent} % of the last {runs} runs completed within {within})",
        "dauert länger als üblich ({percent} % der letzten {runs} Läufe waren innerhalb von {within} fertig)",
    ),
    t(
        "status.with-expectation",
        "{phrase}; {expectation}",
        "{phrase}; {expectation}",
    ),
    t(
        "status.step-overdue",
        "Taking longer than usual at {step} ({percent} % of the last {runs} runs finished it within {within}): {phrase}",
        "Dauert bei {step} länger als üblich ({percent} % der letzten {runs} Läufe waren damit innerhalb von {within} fertig): {phrase}",
    ),
    t(
        "status.overdue",
        "Taking longer than usual ({percent} % of the last {runs} runs completed within {within}): {phrase}",
        "Dauert länger als üblich ({percent} % der letzten {runs} Läufe waren innerhalb von {within} fertig): {phrase}",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_best_supported_language() {
        assert_eq!(Lang::negotiate(None), Lang::En);
        assert_eq!(Lang::negotiate(Some("de-DE,de;q=0.9,en;q=0.8")), Lang::De);
        assert_eq!(Lang::negotiate(Some("fr-FR, de;q=0.5, en;q=0.4")), Lang::De);
        assert_eq!(Lang::negotiate(Some("en;q=0.9, DE;q=1")), Lang::De);
        assert_eq!(Lang::negotiate(Some("fr, ja")), Lang::En);
        assert_eq!(
            Lang::negotiate(Some("de;q=0, en")),
            Lang::En,
            "q=0 is 'not this'"
        );
        assert_eq!(Lang::negotiate(Some("de;q=nan")), Lang::En);
        assert_eq!(Lang::negotiate(Some(&"x,".repeat(100_000))), Lang::En);
    }

    #[test]
    fn every_template_exists_in_every_language_with_the_same_parameters() {
        let params = |s: &str| {
            let mut names: Vec<String> = s
                .split('{')
                .skip(1)
                .filter_map(|p| p.split('}').next().map(str::to_string))
                .collect();
            names.sort();
            names
        };
        for t in CATALOG {
            assert!(!t.en.is_empty() && !t.de.is_empty(), "{}", t.id);
            assert_eq!(params(t.en), params(t.de), "{}", t.id);
        }
        let mut ids: Vec<(&str, u32)> = CATALOG.iter().map(|t| (t.id, t.since)).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), CATALOG.len(), "one template per id and version");
    }

    #[test]
    fn a_run_keeps_the_wording_of_its_catalog_version() {
        static TWO: [Template; 2] = [
            t("x", "first wording", "erste Fassung"),
            Template {
                id: "x",
                since: 2,
                en: "second wording",
                de: "zweite Fassung",
            },
        ];
        assert_eq!(template_in(&TWO, "x", 0, Lang::En), Some("first wording"));
        assert_eq!(template_in(&TWO, "x", 1, Lang::De), Some("erste Fassung"));
        assert_eq!(template_in(&TWO, "x", 2, Lang::En), Some("second wording"));
        assert_eq!(template_in(&TWO, "x", 7, Lang::En), Some("second wording"));
        assert_eq!(template_in(&TWO, "y", 1, Lang::En), None);
    }

    #[test]
    fn rendering_nests_and_survives_unknown_ids_and_params() {
        let left = Message::new("clause.left-in-place").with("steps", "charge");
        let m = Message::new("run.cancelled").with_messages("left", vec![left]);
        assert_eq!(m.render(Lang::En, 1), "Cancelled; left in place: charge");
        assert_eq!(
            m.render(Lang::De, 1),
            "Abgebrochen; bestehen geblieben: charge"
        );
        assert_eq!(
            Message::new("from.a.newer.host").render(Lang::De, 9),
            "from.a.newer.host"
        );
        // A parameter missing renders as nothing; braces in values stay.
        assert_eq!(
            Message::new("run.held").render(Lang::En, 1),
            "Stopped: an operator must act: "
        );
        let m = Message::new("run.held").with("reason", "{reason}");
        assert_eq!(
            m.render(Lang::En, 0),
            "Stopped: an operator must act: {reason}"
        );
    }
}
