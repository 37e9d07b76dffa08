//! A reliability diagram as PNG, drawn with a small rasteriser and a built-in 5x7 bitmap font (no font files or
//! system libraries needed).

use std::path::Path;

use anyhow::Context;

const W: usize = 720;
const H: usize = 540;
const LEFT: usize = 70;
const RIGHT: usize = 690;
const TOP: usize = 50;
const BOTTOM: usize = 480;

/// Colours of successive series.
pub const PALETTE: [[u8; 3]; 8] = [
    [214, 39, 40],
    [31, 119, 180],
    [44, 160, 44],
    [255, 127, 14],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [23, 190, 207],
];

struct Canvas {
    px: Vec<u8>,
}

impl Canvas {
    fn new() -> Self {
        Canvas { px: vec![255; W * H * 3] }
    }

    fn set(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as usize) < W && (y as usize) < H {
            let i = (y as usize * W + x as usize) * 3;
            self.px[i..i + 3].copy_from_slice(&c);
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: i64, dash: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err, mut n) = (x0, y0, dx + dy, 0);
        loop {
            if !dash || (n / 6) % 2 == 0 {
                for ox in 0..thick {
                    for oy in 0..thick {
                        self.set(x + ox - thick / 2, y + oy - thick / 2, c);
                    }
                }
            }
            n += 1;
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, c: [u8; 3]) {
        for yy in y..y + h {
            for xx in x..x + w {
                self.set(xx, yy, c);
            }
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: [u8; 3]) {
        let mut cx = x;
        for ch in s.chars() {
            if let Some(rows) = glyph(ch) {
                for (r, bits) in rows.iter().enumerate() {
                    for col in 0..5 {
                        if bits & (0x10 >> col) != 0 {
                            self.rect(cx + col * scale, y + r as i64 * scale, scale, scale, c);
                        }
                    }
                }
            }
            cx += 6 * scale;
        }
    }
}

fn glyph(ch: char) -> Option<[u8; 7]> {
    let c = ch.to_ascii_lowercase();
    Some(match c {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'a' => [0x00, 0x00, 0x0E, 0x01, 0x0F, 0x11, 0x0F],
        'b' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x1E],
        'c' => [0x00, 0x00, 0x0E, 0x10, 0x10, 0x11, 0x0E],
        'd' => [0x01, 0x01, 0x0D, 0x13, 0x11, 0x11, 0x0F],
        'e' => [0x00, 0x00, 0x0E, 0x11, 0x1F, 0x10, 0x0E],
        'f' => [0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08],
        'g' => [0x00, 0x0F, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'h' => [0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11],
        'i' => [0x04, 0x00, 0x0C, 0x04, 0x04, 0x04, 0x0E],
        'j' => [0x02, 0x00, 0x06, 0x02, 0x02, 0x12, 0x0C],
        'k' => [0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12],
        'l' => [0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'm' => [0x00, 0x00, 0x1A, 0x15, 0x15, 0x11, 0x11],
        'n' => [0x00, 0x00, 0x16, 0x19, 0x11, 0x11, 0x11],
        'o' => [0x00, 0x00, 0x0E, 0x11, 0x11, 0x11, 0x0E],
        'p' => [0x00, 0x00, 0x1E, 0x11, 0x1E, 0x10, 0x10],
        'q' => [0x00, 0x00, 0x0D, 0x13, 0x0F, 0x01, 0x01],
        'r' => [0x00, 0x00, 0x16, 0x19, 0x10, 0x10, 0x10],
        's' => [0x00, 0x00, 0x0E, 0x10, 0x0E, 0x01, 0x1E],
        't' => [0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06],
        'u' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x13, 0x0D],
        'v' => [0x00, 0x00, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'w' => [0x00, 0x00, 0x11, 0x11, 0x15, 0x15, 0x0A],
        'x' => [0x00, 0x00, 0x11, 0x0A, 0x04, 0x0A, 0x11],
        'y' => [0x00, 0x00, 0x11, 0x11, 0x0F, 0x01, 0x0E],
        'z' => [0x00, 0x00, 0x1F, 0x02, 0x04, 0x08, 0x1F],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '-' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        ' ' => [0; 7],
        _ => return None,
    })
}

fn to_px(p: f64, f: f64) -> (i64, i64) {
    let x = LEFT as f64 + p.clamp(0.0, 1.0) * (RIGHT - LEFT) as f64;
    let y = BOTTOM as f64 - f.clamp(0.0, 1.0) * (BOTTOM - TOP) as f64;
    (x.round() as i64, y.round() as i64)
}

/// One curve: a name and its reliability bins `(mean forecast, observed frequency, count)`.
pub struct Series<'a> {
    pub name: &'a str,
    pub bins: &'a [(f64, f64, usize)],
}

/// Renders the diagram to PNG bytes.
pub fn reliability_png(title: &str, series: &[Series]) -> anyhow::Result<Vec<u8>> {
    let mut cv = Canvas::new();
    let grey = [200, 200, 200];
    let black = [30, 30, 30];
    for k in 0..=5 {
        let v = k as f64 / 5.0;
        cv.line(to_px(v, 0.0), to_px(v, 1.0), [235, 235, 235], 1, false);
        cv.line(to_px(0.0, v), to_px(1.0, v), [235, 235, 235], 1, false);
        let (x, y) = to_px(v, 0.0);
        cv.text(x - 9, y + 8, &format!("{v:.1}"), 1, black);
        let (x, y) = to_px(0.0, v);
        cv.text(x - 28, y - 3, &format!("{v:.1}"), 1, black);
    }
    cv.line(to_px(0.0, 0.0), to_px(1.0, 0.0), black, 2, false);
    cv.line(to_px(0.0, 0.0), to_px(0.0, 1.0), black, 2, false);
    cv.line(to_px(0.0, 0.0), to_px(1.0, 1.0), grey, 2, true);
    cv.text(LEFT as i64, 16, title, 2, black);
    cv.text(((LEFT + RIGHT) / 2) as i64 - 110, BOTTOM as i64 + 30, "forecast probability of up", 1, black);
    cv.text(8, TOP as i64 - 20, "observed frequency", 1, black);
    for (si, s) in series.iter().enumerate() {
        let c = PALETTE[si % PALETTE.len()];
        let pts: Vec<(i64, i64)> = s.bins.iter().map(|(p, f, _)| to_px(*p, *f)).collect();
        for w in pts.windows(2) {
            cv.line(w[0], w[1], c, 2, false);
        }
        for &(x, y) in &pts {
            cv.rect(x - 3, y - 3, 7, 7, c);
        }
        let ly = TOP as i64 + 10 + si as i64 * 18;
        cv.rect(LEFT as i64 + 12, ly, 12, 10, c);
        cv.text(LEFT as i64 + 30, ly + 1, s.name, 1, black);
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, W as u32, H as u32);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&cv.px)?;
    }
    Ok(out)
}

/// Renders and writes the diagram.
pub fn write_reliability_png(path: &Path, title: &str, series: &[Series]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::write(path, reliability_png(title, series)?).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_decodable_png_with_the_curves_drawn() {
        let bins = [(0.1, 0.15, 10), (0.5, 0.45, 30), (0.9, 0.8, 10)];
        let bytes = reliability_png("reliability h1", &[Series { name: "kronos", bins: &bins }]).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = dec.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (W as u32, H as u32));
        // The first series' colour appears (the curve and its markers were drawn).
        let red = PALETTE[0];
        let count = buf.chunks(3).filter(|p| p == &red).count();
        assert!(count > 100, "{count}");
        assert!(glyph('Q').is_some() && glyph('?').is_none());
    }
}
