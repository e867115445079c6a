//! Reading usage traces: CSV `series_id,timestamp_s,memory_bytes[,memory_limit_bytes]`,
//! plain or gzip (recognised by its magic bytes), streamed one series at a time.
//! Rows must be grouped by series (any time order inside a group); a header line
//! is optional.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("reading the trace: {0}")]
    Io(#[from] io::Error),
    #[error("line {line}: {reason}")]
    BadLine { line: u64, reason: String },
    #[error("line {line}: series {series:?} appears again after other series; the trace must be grouped by series")]
    NotGrouped { line: u64, series: String },
}

/// One raw sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceSample {
    pub t: i64,
    pub memory: f64,
    /// The size the series ran with, when the trace has it.
    pub limit: Option<f64>,
}

/// All samples of one series, sorted by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub id: String,
    pub samples: Vec<TraceSample>,
    /// The aggregates the strategies see, when they come ready-made (from Prometheus);
    /// otherwise they are built from `samples`.
    pub intervals: Option<Vec<crate::strategy::Interval>>,
}

/// Streams [`Series`] out of a CSV trace.
pub struct TraceReader<R> {
    lines: R,
    line_no: u64,
    buf: String,
    pending: Option<(String, TraceSample)>,
    seen: HashSet<String>,
    done: bool,
}

/// Open any reader as a trace, gunzipping if it starts with the gzip magic bytes.
pub fn open<R: Read + Send + 'static>(r: R) -> io::Result<TraceReader<Box<dyn BufRead + Send>>> {
    let mut br = BufReader::with_capacity(1 << 16, r);
    let gz = br.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let inner: Box<dyn BufRead + Send> = if gz {
        Box::new(BufReader::with_capacity(1 << 16, MultiGzDecoder::new(br)))
    } else {
        Box::new(br)
    };
    Ok(TraceReader::new(inner))
}

fn field<'a>(
    it: &mut impl Iterator<Item = &'a str>,
    name: &str,
    line: u64,
) -> Result<&'a str, TraceError> {
    it.next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| TraceError::BadLine {
            line,
            reason: format!("missing {name}"),
        })
}

fn number(s: &str, name: &str, line: u64) -> Result<f64, TraceError> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(TraceError::BadLine {
            line,
            reason: format!("{name} {s:?} is not a non-negative number"),
        }),
    }
}

impl<R: BufRead> TraceReader<R> {
    pub fn new(lines: R) -> Self {
        TraceReader {
            lines,
            line_no: 0,
            buf: String::new(),
            pending: None,
            seen: HashSet::new(),
            done: false,
        }
    }

    /// The next row, or `None` at the end.
    fn row(&mut self) -> Result<Option<(String, TraceSample)>, TraceError> {
        loop {
            self.buf.clear();
            if self.lines.read_line(&mut self.buf)? == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let l = self.buf.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if self.line_no == 1 && l.starts_with("series_id") {
                continue;
            }
            let line = self.line_no;
            let mut it = l.split(',');
            let id = field(&mut it, "series_id", line)?;
            let ts = field(&mut it, "timestamp_s", line)?;
            let t = match ts.parse::<i64>() {
                Ok(t) => t,
                Err(_) => number(ts, "timestamp_s", line)?.floor() as i64,
            };
            let memory = number(field(&mut it, "memory_bytes", line)?, "memory_bytes", line)?;
            let limit = match it.next().map(str::trim) {
                None | Some("") => None,
                Some(s) => Some(number(s, "memory_limit_bytes", line)?),
            };
            if it.next().is_some() {
                return Err(TraceError::BadLine {
                    line,
                    reason: "more than 4 fields".into(),
                });
            }
            return Ok(Some((id.to_string(), TraceSample { t, memory, limit })));
        }
    }

    /// The next series, or `None` at the end of the trace.
    pub fn next_series(&mut self) -> Result<Option<Series>, TraceError> {
        if self.done {
            return Ok(None);
        }
        let (id, first) = match self.pending.take() {
            Some(p) => p,
            None => match self.row()? {
                Some(p) => p,
                None => {
                    self.done = true;
                    return Ok(None);
                }
            },
        };
        if !self.seen.insert(id.clone()) {
            return Err(TraceError::NotGrouped {
                line: self.line_no,
                series: id,
            });
        }
        let mut samples = vec![first];
        loop {
            match self.row()? {
                Some((next_id, s)) if next_id == id => samples.push(s),
                Some(other) => {
                    self.pending = Some(other);
                    break;
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        if !samples.is_sorted_by_key(|s| s.t) {
            samples.sort_by_key(|s| s.t);
        }
        Ok(Some(Series {
            id,
            samples,
            intervals: None,
        }))
    }
}

impl<R: BufRead> Iterator for TraceReader<R> {
    type Item = Result<Series, TraceError>;
    fn next(&mut self) -> Option<Self::Item> {
        match self.next_series() {
            Ok(Some(s)) => Some(Ok(s)),
            Ok(None) => None,
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<Series>, TraceError> {
        TraceReader::new(text.as_bytes()).collect()
    }

    #[test]
    fn groups_and_sorts() {
        let s = read(
            "series_id,timestamp_s,memory_bytes,memory_limit_bytes\na,20,2,10\na,10,1,10\nb,5,7\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].id, "a");
        assert_eq!(
            s[0].samples.iter().map(|x| x.t).collect::<Vec<_>>(),
            vec![10, 20]
        );
        assert_eq!(s[1].samples[0].limit, None);
        assert_eq!(s[1].samples[0].memory, 7.0);
    }

    #[test]
    fn bad_lines_have_line_numbers() {
        let e = read("a,1,2\na,2,x\n").unwrap_err();
        assert!(matches!(e, TraceError::BadLine { line: 2, .. }), "{e}");
        let e = read("a,1\n").unwrap_err();
        assert!(matches!(e, TraceError::BadLine { line: 1, .. }), "{e}");
        let e = read("a,1,2\nb,1,2\na,3,4\n").unwrap_err();
        assert!(matches!(e, TraceError::NotGrouped { line: 3, .. }), "{e}");
    }
}
