//! The flow drawn as SVG, for the dashboard's flow page: its steps top to
//! bottom, a `parallel` step's branches side by side between a fork and
//! its join, a condition on the arrow into its step with the way round it
//! when false, what is undone when a later step fails, and the end
//! (confirmation, settled). Text is escaped and cut; the drawing's size
//! grows with the flow (at most [`crate::limits`]' steps and branches).

use crate::{Flow, Join, OnExhausted, StepDef, Wait};
use std::fmt::Write;

const BOX_W: i64 = 200;
const BOX_H: i64 = 40;
const GAP: i64 = 34;
const MARGIN: i64 = 24;
/// Room on the right for the way round a skipped step and the notes.
const SIDE: i64 = 190;

/// `text` safe inside SVG text or an attribute, at most `max` characters.
fn esc(text: &str, max: usize) -> String {
    let mut cut: String = text.chars().filter(|c| !c.is_control()).take(max).collect();
    if text.chars().count() > max {
        cut.push('…');
    }
    cut.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// What a step does, in a few words under its name.
fn what(step: &StepDef) -> String {
    match (&step.wait, &step.signal, &step.approval, &step.parallel) {
        (Some(Wait::For(d)), ..) => format!("wait {}", humantime::format_duration(*d)),
        (Some(Wait::Until(_)), ..) => "wait until a time".into(),
        (_, Some(s), ..) => format!("signal {}", s.name),
        (_, _, Some(a), _) => format!("approval, {} needed", a.required),
        (_, _, _, Some(p)) => match p.join {
            Join::All => format!("parallel, join all, {} at a time", p.concurrency),
            Join::First(n) => format!("parallel, join first {n}, {} at a time", p.concurrency),
        },
        _ => match &step.for_each {
            Some(f) => format!("{} per item, {} at a time", step.plugin, f.concurrency),
            None => step.plugin.clone(),
        },
    }
}

struct Drawing {
    out: String,
    width: i64,
}

impl Drawing {
    fn rect(&mut self, x: i64, y: i64, w: i64, class: &str, title: &str, sub: &str) {
        let _ = write!(
            self.out,
            r#"<g class="{class}"><rect x="{x}" y="{y}" width="{w}" height="{BOX_H}" rx="6"/><text x="{}" y="{}" text-anchor="middle">{}</text><text class="sub" x="{}" y="{}" text-anchor="middle">{}</text></g>"#,
            x + w / 2,
            y + 16,
            esc(title, 28),
            x + w / 2,
            y + 32,
            esc(sub, 34),
        );
    }

    fn arrow(&mut self, x1: i64, y1: i64, x2: i64, y2: i64, class: &str) {
        let _ = write!(
            self.out,
            r#"<line class="{class}" x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" marker-end="url(#arrow)"/>"#
        );
    }

    fn note(&mut self, x: i64, y: i64, class: &str, text: &str) {
        let _ = write!(
            self.out,
            r#"<text class="{class}" x="{x}" y="{y}">{}</text>"#,
            esc(text, 40)
        );
    }
}

/// The flow as an SVG document.
pub fn svg(flow: &Flow) -> String {
    let widest = flow
        .steps
        .iter()
        .map(|s| s.parallel.as_ref().map_or(1, |p| p.branches.len() as i64))
        .max()
        .unwrap_or(1);
    let body_w = (widest * (BOX_W + 16)).max(BOX_W);
    let width = MARGIN * 2 + body_w + SIDE;
    let center = MARGIN + body_w / 2;
    let left = center - BOX_W / 2;
    let mut d = Drawing {
        out: String::new(),
        width,
    };
    let mut y = MARGIN;
    d.rect(
        left,
        y,
        BOX_W,
        "end",
        &format!("{} accepted", flow.id()),
        "a run starts",
    );
    y += BOX_H;
    let last = flow.steps.len().saturating_sub(1);
    for (i, step) in flow.steps.iter().enumerate() {
        let top = y + GAP;
        d.arrow(center, y, center, top, "flow");
        if let Some(c) = &step.condition {
            d.note(
                center + 8,
                y + GAP / 2 + 4,
                "cond",
                &format!("if {}", c.text),
            );
        }
        let bottom = match &step.parallel {
            None => {
                let class = if step.calls_plugin() {
                    "step"
                } else {
                    "builtin"
                };
                d.rect(
                    left,
                    top,
                    BOX_W,
                    class,
                    &format!("{}. {}", i + 1, step.name),
                    &what(step),
                );
                top + BOX_H
            }
            Some(p) => {
                // Fork bar, branches side by side, join bar.
                let n = p.branches.len() as i64;
                let row_w = n * (BOX_W + 16) - 16;
                let row_left = center - row_w / 2;
                let _ = write!(
                    d.out,
                    r#"<rect class="bar" x="{}" y="{top}" width="{row_w}" height="6"/>"#,
                    row_left
                );
                d.note(
                    row_left + row_w + 8,
                    top + 6,
                    "sub",
                    &format!("{}. {}: {}", i + 1, step.name, what(step)),
                );
                let branch_top = top + 6 + GAP;
                for (j, b) in p.branches.iter().enumerate() {
                    let x = row_left + j as i64 * (BOX_W + 16);
                    d.arrow(x + BOX_W / 2, top + 6, x + BOX_W / 2, branch_top, "flow");
                    d.rect(x, branch_top, BOX_W, "step", &b.name, &b.call.plugin);
                    d.arrow(
                        x + BOX_W / 2,
                        branch_top + BOX_H,
                        x + BOX_W / 2,
                        branch_top + BOX_H + GAP,
                        "flow",
                    );
                }
                let join_y = branch_top + BOX_H + GAP;
                let _ = write!(
                    d.out,
                    r#"<rect class="bar" x="{}" y="{join_y}" width="{row_w}" height="6"/>"#,
                    row_left
                );
                join_y + 6
            }
        };
        // A false `if:` goes round the step.
        if step.condition.is_some() {
            let x = MARGIN + body_w + 40;
            let _ = write!(
                d.out,
                r#"<path class="skip" d="M{center},{} H{x} V{} H{}" marker-end="url(#arrow)"/>"#,
                y + GAP / 2,
                bottom + GAP / 2,
                center + 4
            );
            d.note(
                x + 6,
                (y + bottom) / 2 + GAP / 2,
                "skip-text",
                "false: skipped",
            );
        }
        let mut notes = Vec::new();
        if step.compensate && (i < last) {
            notes.push("undone if a later step fails");
        }
        if step.on_exhausted == OnExhausted::Hold {
            notes.push("retries run out: held");
        }
        for (k, n) in notes.iter().enumerate() {
            d.note(MARGIN + body_w + 60, top + 14 + k as i64 * 14, "undo", n);
        }
        y = bottom;
    }
    let top = y + GAP;
    d.arrow(center, y, center, top, "flow");
    d.rect(
        left,
        top,
        BOX_W,
        "end",
        "confirm",
        "with downstream systems",
    );
    let settled = top + BOX_H + GAP;
    d.arrow(center, top + BOX_H, center, settled, "flow");
    d.rect(
        left,
        settled,
        BOX_W,
        "end",
        "settled",
        "or drifted, if they disagree",
    );
    let height = settled + BOX_H + MARGIN;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" width="{w}" height="{height}" viewBox="0 0 {w} {height}" role="img" aria-label="flow {label}"><title>{label}</title><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker></defs><style>text{{font:12px sans-serif;fill:#222}} .sub{{font-size:10px;fill:#555}} rect{{fill:#fff;stroke:#446}} .builtin rect{{fill:#f3f0ff}} .end rect{{fill:#eef6ee}} .bar{{fill:#446}} line.flow{{stroke:#446}} .skip{{fill:none;stroke:#999;stroke-dasharray:4 3}} .skip-text,.cond{{font-size:10px;fill:#666}} .undo{{font-size:10px;fill:#a33}}</style>{body}</svg>"##,
        w = d.width,
        label = esc(&flow.id(), 80),
        body = d.out,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_draws_steps_branches_conditions_and_escapes_text() {
        let flow = Flow::parse(
            r#"name: drawn
version: "<b>&'1'"
steps:
  - { name: charge, plugin: noop }
  - name: tell
    if: "${{ input.amount > 100 }}"
    parallel:
      join: { first: 1 }
      branches:
        - { name: mail, plugin: notify }
        - { name: sms, plugin: notify }
  - name: pause
    wait: 5m
"#,
            "f.yaml",
        )
        .unwrap();
        let svg = svg(&flow);
        assert!(svg.starts_with("<svg"), "{svg}");
        for expected in [
            ">1. charge<",
            ">mail<",
            ">sms<",
            "parallel, join first 1",
            "if ${{ input.amount &gt; 100 }}",
            "false: skipped",
            ">3. pause<",
            "wait 5m",
            "undone if a later step fails",
            "drawn@&lt;b&gt;&amp;&#39;1&#39;",
        ] {
            assert!(svg.contains(expected), "missing {expected:?} in {svg}");
        }
        assert!(!svg.contains("<b>"), "escaped: {svg}");
    }
}
