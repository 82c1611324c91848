//! The chart of `loupe compare --plot`: quality (mean KL divergence to the base, log
//! scale, lower is better) against size (bits per weight), one labelled point per model,
//! drawn as a hand-written SVG (the caller writes it, atomically).

use std::fmt::Write as _;

/// One model on the chart.
#[derive(Clone, Debug)]
pub struct Point {
    pub label: String,
    /// Bits per weight.
    pub x: f64,
    /// Mean KLD, nats.
    pub y: f64,
}

const W: f64 = 760.0;
const H: f64 = 480.0;
const LEFT: f64 = 84.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 62.0;
/// KLDs below this (a model identical to the base) are drawn at it.
const FLOOR: f64 = 1e-6;

/// The SVG text. `threshold` draws a dashed line at that KLD; `connect` joins the
/// points in order of size (a ladder from one source).
pub fn svg(points: &[Point], title: &str, threshold: Option<f64>, connect: bool) -> String {
    let ys = points
        .iter()
        .map(|p| p.y.max(FLOOR))
        .chain(threshold)
        .filter(|y| y.is_finite());
    let (ymin, ymax) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| {
        (a.min(y), b.max(y))
    });
    let (mut d0, mut d1) = if ymin.is_finite() {
        (ymin.log10().floor() as i32, ymax.log10().ceil() as i32)
    } else {
        (-3, 0)
    };
    if d1 <= d0 {
        d0 -= 1;
        d1 += 1;
    }
    let (xmin, xmax) = points
        .iter()
        .map(|p| p.x)
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    let (xmin, xmax) = if xmin.is_finite() {
        ((xmin - 0.5).floor().max(0.0), (xmax + 0.5).ceil())
    } else {
        (0.0, 16.0)
    };
    let xmax = if xmax <= xmin { xmin + 1.0 } else { xmax };
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let sx = |x: f64| LEFT + (x - xmin) / (xmax - xmin) * pw;
    let sy = |y: f64| {
        let l = y.max(FLOOR).log10();
        TOP + ph - (l - f64::from(d0)) / f64::from(d1 - d0) * ph
    };

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect x="0" y="0" width="{W}" height="{H}" fill="white"/>
<text x="{:.1}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        W / 2.0,
        escape(title)
    );
    // Grid and ticks: every decade of KLD (and 2×, 5× in grey), whole bits per weight.
    let _ = writeln!(s, r##"<g stroke="#ddd" stroke-width="1">"##);
    for d in d0..=d1 {
        for m in [1.0, 2.0, 5.0] {
            let v = m * 10f64.powi(d);
            if d == d1 && m > 1.0 {
                continue;
            }
            let y = sy(v);
            let stroke = if m == 1.0 { "#ccc" } else { "#eee" };
            let _ = writeln!(
                s,
                r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}"/>"#,
                LEFT + pw
            );
        }
    }
    let x_step = if xmax - xmin > 12.0 { 2.0 } else { 1.0 };
    let mut x = xmin;
    while x <= xmax + 1e-9 {
        let px = sx(x);
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}"/>"#,
            TOP + ph
        );
        x += x_step;
    }
    let _ = writeln!(s, "</g>");
    // Axes, tick labels, axis titles.
    let _ = writeln!(
        s,
        r#"<path d="M{LEFT},{TOP} V{:.1} H{:.1}" fill="none" stroke="black"/>"#,
        TOP + ph,
        LEFT + pw
    );
    for d in d0..=d1 {
        let y = sy(10f64.powi(d));
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{LEFT}" y2="{y:.1}" stroke="black"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 5.0,
            LEFT - 8.0,
            y + 4.0,
            decade_label(d)
        );
    }
    let mut x = xmin;
    while x <= xmax + 1e-9 {
        let px = sx(x);
        let _ = writeln!(
            s,
            r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="black"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            TOP + ph,
            TOP + ph + 5.0,
            TOP + ph + 20.0
        );
        x += x_step;
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">size: bits per weight</text>"#,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(20,{:.1}) rotate(-90)" text-anchor="middle">mean KL divergence to the base (nats, log scale; lower is closer)</text>"#,
        TOP + ph / 2.0
    );
    if let Some(t) = threshold.filter(|t| t.is_finite() && *t > 0.0) {
        let y = sy(t);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#c0392b" stroke-dasharray="6,4"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#c0392b">max KLD {t}</text>"##,
            LEFT + pw,
            LEFT + pw - 4.0,
            y - 5.0
        );
    }
    // The points, sorted by size; each label takes the first place around its point
    // (above, below, right, left, then the corners) where it covers no other label or
    // point. A NaN or infinite KLD (NaN logits) has no place on the chart: drawn at the
    // floor it would look like a perfect model.
    let mut order: Vec<&Point> = points
        .iter()
        .filter(|p| p.x.is_finite() && p.y.is_finite())
        .collect();
    order.sort_by(|a, b| a.x.total_cmp(&b.x));
    if connect && order.len() > 1 {
        let path: Vec<String> = order
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.x), sy(p.y)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#7fa7d8" stroke-width="1.5"/>"##,
            path.join(" ")
        );
    }
    let at: Vec<(f64, f64)> = order.iter().map(|p| (sx(p.x), sy(p.y))).collect();
    let labels: Vec<&str> = order.iter().map(|p| p.label.as_str()).collect();
    for ((&(px, py), p), l) in at.iter().zip(&order).zip(place_labels(&at, &labels)) {
        let _ = writeln!(
            s,
            r##"<g class="point"><circle cx="{px:.1}" cy="{py:.1}" r="5" fill="#1f5fa8"/><text x="{:.1}" y="{:.1}" text-anchor="{}">{}</text></g>"##,
            l.x,
            l.y,
            l.anchor,
            escape(&p.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Where a point's label goes: the text's anchor point and SVG `text-anchor`.
#[derive(Clone, Copy, Debug)]
struct LabelAt {
    x: f64,
    y: f64,
    anchor: &'static str,
}

impl LabelAt {
    /// The label's box (left, top, right, bottom), from a 13 px font's ~7 px per character.
    fn bbox(&self, text: &str) -> (f64, f64, f64, f64) {
        let w = 7.0 * text.chars().count() as f64;
        let left = match self.anchor {
            "start" => self.x,
            "end" => self.x - w,
            _ => self.x - w / 2.0,
        };
        (left, self.y - 11.0, left + w, self.y + 3.0)
    }
}

fn overlaps(a: (f64, f64, f64, f64), b: (f64, f64, f64, f64)) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// A place for each label (`labels[i]` of the point at `at[i]`, in pixels): the first of
/// above, below, right, left and the four corners whose box meets no label placed before
/// it and no point's dot; above when none is free.
fn place_labels(at: &[(f64, f64)], labels: &[&str]) -> Vec<LabelAt> {
    let dots: Vec<(f64, f64, f64, f64)> = at
        .iter()
        .map(|&(x, y)| (x - 6.0, y - 6.0, x + 6.0, y + 6.0))
        .collect();
    let mut placed: Vec<(f64, f64, f64, f64)> = Vec::new();
    let mut out = Vec::with_capacity(at.len());
    for (&(x, y), text) in at.iter().zip(labels) {
        let candidates = [
            LabelAt {
                x,
                y: y - 10.0,
                anchor: "middle",
            },
            LabelAt {
                x,
                y: y + 20.0,
                anchor: "middle",
            },
            LabelAt {
                x: x + 9.0,
                y: y + 4.0,
                anchor: "start",
            },
            LabelAt {
                x: x - 9.0,
                y: y + 4.0,
                anchor: "end",
            },
            LabelAt {
                x: x + 6.0,
                y: y - 9.0,
                anchor: "start",
            },
            LabelAt {
                x: x - 6.0,
                y: y - 9.0,
                anchor: "end",
            },
            LabelAt {
                x: x + 6.0,
                y: y + 19.0,
                anchor: "start",
            },
            LabelAt {
                x: x - 6.0,
                y: y + 19.0,
                anchor: "end",
            },
        ];
        let free = |c: &LabelAt| {
            let b = c.bbox(text);
            !placed.iter().chain(&dots).any(|&o| overlaps(b, o))
        };
        let chosen = candidates
            .iter()
            .copied()
            .find(free)
            .unwrap_or(candidates[0]);
        placed.push(chosen.bbox(text));
        out.push(chosen);
    }
    out
}

/// "0.001", "1", "10", and 1e-5 style for the far decades.
fn decade_label(d: i32) -> String {
    match d {
        -4..=-1 => format!("{:.*}", (-d) as usize, 10f64.powi(d)),
        0..=3 => format!("{}", 10i64.pow(d as u32)),
        _ => format!("1e{d}"),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_point_per_model_and_balanced_tags() {
        let pts = [
            Point {
                label: "Q8_0".into(),
                x: 8.5,
                y: 0.0012,
            },
            Point {
                label: "Q2_K <&>".into(),
                x: 3.1,
                y: 0.4,
            },
        ];
        let s = svg(&pts, "title", Some(0.05), true);
        assert_eq!(s.matches("<circle").count(), 2);
        assert!(s.contains("Q2_K &lt;&amp;&gt;"));
        assert_eq!(s.matches("<g").count(), s.matches("</g>").count());
        assert!(s.contains(">0.001<") && s.contains(">1<"));
    }

    #[test]
    fn labels_of_close_points_do_not_overlap() {
        // The qwen ladder's crowded corner: Q2_K, Q4_0 and Q3_K_M within 0.2 bpw.
        let at = [
            (250.0, 165.0),
            (273.0, 166.0),
            (278.0, 193.0),
            (375.0, 311.0),
        ];
        let labels = ["Q2_K", "Q4_0", "Q3_K_M", "Q4_K_M"];
        let placed = place_labels(&at, &labels);
        for i in 0..at.len() {
            let bi = placed[i].bbox(labels[i]);
            for j in 0..at.len() {
                let (x, y) = at[j];
                assert!(
                    !overlaps(bi, (x - 5.0, y - 5.0, x + 5.0, y + 5.0)),
                    "{} on dot {j}",
                    labels[i]
                );
                if j != i {
                    assert!(
                        !overlaps(bi, placed[j].bbox(labels[j])),
                        "{} on {}",
                        labels[i],
                        labels[j]
                    );
                }
            }
        }
    }

    #[test]
    fn decade_labels() {
        assert_eq!(decade_label(-3), "0.001");
        assert_eq!(decade_label(0), "1");
        assert_eq!(decade_label(-6), "1e-6");
    }
}
