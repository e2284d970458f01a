//! The install report body (SPEC.md §4.7, §5.11): what happened when a client tried an upgrade.
//!
//! A client sends one after its upgrade attempts (message kind `report`), with a bounded number
//! of retransmissions, and keeps the outcomes the server has not acknowledged to send them again
//! with its next check. Servers store each attempt once (a deferred upgrade's final result
//! replaces its `deferred` one) and aggregate per release; a report
//! never identifies a machine or a person: an installation is known only by the channel it
//! follows and its bucket band (its rollout bucket divided by ten).
//!
//! ```text
//! <report channel="beta" band="4">
//!   <outcome attempt="81985529216486895" module="core" from="1.2" to="1.3" result="applied"/>
//! </report>
//! ```

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::body::value::Fields;
use crate::body::xml::{Element, XmlReader, write_attribute, write_number};
use crate::body::{finish_leaf, for_each_child, parse_document};
use crate::error::BodyError;
use crate::limits::MAX_OUTCOMES_PER_REPORT;
use crate::version::Version;

/// How many bucket bands there are: a band is a bucket divided by ten, in `0..BANDS`.
pub const BANDS: u8 = 10;

/// An install report: the outcomes of one or more upgrade attempts of one installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report<'a> {
    /// The channel the installation follows; `None` means the default channel.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Cow<'a, str>>,
    /// The installation's bucket band, in `0..BANDS`; `None` when it has no bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub band: Option<u8>,
    /// One entry per attempt, at least one.
    pub outcomes: Vec<Outcome<'a>>,
}

/// The outcome of one upgrade attempt of one module. Its JSON form (serde) is how a client
/// keeps it until the server acknowledges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome<'a> {
    /// A random number the client draws once per attempt: a server that receives the same
    /// attempt twice (a retransmission) counts it once.
    pub attempt: u64,
    /// The module id.
    pub module: Cow<'a, str>,
    /// The version the installation had; `None` for a first install.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Cow<'a, str>>,
    /// The version the attempt aimed at.
    pub to: Cow<'a, str>,
    /// What happened.
    pub result: OutcomeKind,
    /// Why it failed, for [`OutcomeKind::Failed`] and [`OutcomeKind::RolledBack`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<FailureCode>,
}

/// What happened to an upgrade attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutcomeKind {
    /// The upgrade is in place.
    Applied,
    /// The upgrade failed before anything changed.
    Failed,
    /// Some files were busy: their replacement waits for a restart or reboot.
    Deferred,
    /// The upgrade failed while being applied and the installation was restored.
    RolledBack,
}

/// Why an upgrade attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureCode {
    /// A download failed (network, HTTP status, size).
    Download,
    /// Downloaded content did not match its declared hash or size.
    Verify,
    /// The installer or a hook exited with a failure.
    Installer,
    /// Writing the installation failed (permissions, busy files that could not be deferred).
    Apply,
    /// Not enough disk space.
    Space,
    /// Any other failure.
    Other,
}

impl OutcomeKind {
    /// Every kind, in the order of the spec.
    pub const ALL: [OutcomeKind; 4] = [Self::Applied, Self::Failed, Self::Deferred, Self::RolledBack];

    /// Its name on the wire (attribute `result`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Failed => "failed",
            Self::Deferred => "deferred",
            Self::RolledBack => "rolled-back",
        }
    }

    /// The kind for its wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Whether an outcome of this kind carries a [`FailureCode`] (and only these do).
    pub fn has_code(self) -> bool {
        matches!(self, Self::Failed | Self::RolledBack)
    }
}

impl FailureCode {
    /// Every code, in the order of the spec.
    pub const ALL: [FailureCode; 6] =
        [Self::Download, Self::Verify, Self::Installer, Self::Apply, Self::Space, Self::Other];

    /// Its name on the wire (attribute `code`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Download => "download",
            Self::Verify => "verify",
            Self::Installer => "installer",
            Self::Apply => "apply",
            Self::Space => "space",
            Self::Other => "other",
        }
    }

    /// The code for its wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.name() == name)
    }
}

impl<'a> Report<'a> {
    /// Decodes a report body.
    ///
    /// ```
    /// use upgram_core::body::{OutcomeKind, Report};
    /// let report = Report::decode(
    ///     br#"<report band="4"><outcome attempt="7" module="core" from="1.2" to="1.3" result="applied"/></report>"#,
    /// )?;
    /// assert_eq!(report.band, Some(4));
    /// assert_eq!(report.outcomes[0].result, OutcomeKind::Applied);
    /// # Ok::<(), upgram_core::error::BodyError>(())
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Self, BodyError> {
        parse_document(bytes, "report", |reader, root| {
            let (mut channel, mut band) = (None, None);
            reader.for_each_attribute(&root, |name, value| {
                match name {
                    "channel" => channel = Some(value),
                    "band" => band = Some(value),
                    _ => {}
                }
                Ok(())
            })?;
            let fields = Fields::new("report", None);
            let channel = channel.map(|c| fields.module_id("channel", c)).transpose()?;
            let band = band.map(|b| fields.small_number::<u8>("band", &b)).transpose()?;
            if let Some(b) = band
                && b >= BANDS
            {
                return Err(fields.invalid("band", format!("{b} is not below {BANDS}")));
            }
            let mut outcomes = Vec::new();
            for_each_child(reader, &root, "report", &["outcome"], |reader, element| {
                if outcomes.len() == MAX_OUTCOMES_PER_REPORT {
                    return Err(BodyError::TooManyElements { what: "outcomes", max: MAX_OUTCOMES_PER_REPORT });
                }
                outcomes.push(Outcome::parse(reader, element)?);
                Ok(())
            })?;
            if outcomes.is_empty() {
                return Err(BodyError::MissingElement { element: "report", context: String::new(), child: "outcome" });
            }
            // Each attempt once: a server counts an attempt once, so a repeated one is a bug.
            let mut attempts: Vec<u64> = outcomes.iter().map(|o| o.attempt).collect();
            attempts.sort_unstable();
            if let Some(pair) = attempts.windows(2).find(|pair| pair[0] == pair[1]) {
                let fields = Fields::new("outcome", None);
                return Err(fields.invalid("attempt", format!("attempt {} listed twice in one report", pair[0])));
            }
            Ok(Report { channel, band, outcomes })
        })
    }

    /// Writes the canonical encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<report");
        if let Some(channel) = &self.channel {
            write_attribute(out, "channel", channel);
        }
        if let Some(band) = self.band {
            write_number(out, "band", u64::from(band));
        }
        out.push(b'>');
        for outcome in &self.outcomes {
            outcome.encode(out);
        }
        out.extend_from_slice(b"</report>");
    }

    /// The canonical encoding in a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 96 * self.outcomes.len());
        self.encode(&mut out);
        out
    }

    /// Copies every borrowed string, detaching the report from its input.
    pub fn into_owned(self) -> Report<'static> {
        Report {
            channel: self.channel.map(|c| Cow::Owned(c.into_owned())),
            band: self.band,
            outcomes: self.outcomes.into_iter().map(Outcome::into_owned).collect(),
        }
    }
}

impl<'a> Outcome<'a> {
    fn parse(reader: &mut XmlReader<'a>, element: Element<'a>) -> Result<Self, BodyError> {
        let (mut attempt, mut module, mut from, mut to, mut result, mut code) = (None, None, None, None, None, None);
        reader.for_each_attribute(&element, |name, value| {
            match name {
                "attempt" => attempt = Some(value),
                "module" => module = Some(value),
                "from" => from = Some(value),
                "to" => to = Some(value),
                "result" => result = Some(value),
                "code" => code = Some(value),
                _ => {}
            }
            Ok(())
        })?;
        finish_leaf(reader, &element, "outcome")?;
        let fields = Fields::new("outcome", module.as_deref());
        let attempt = fields.number("attempt", &fields.required("attempt", attempt)?)?;
        let module = fields.module_id("module", fields.required("module", module.clone())?)?;
        let from = from.map(|v| checked_version(&fields, "from", v)).transpose()?;
        let to = checked_version(&fields, "to", fields.required("to", to)?)?;
        let result = fields.required("result", result)?;
        let result = OutcomeKind::from_name(&result)
            .ok_or_else(|| fields.invalid("result", format!("`{}` is not an outcome", result.escape_debug())))?;
        let code =
            if result.has_code() {
                let code = fields.required("code", code)?;
                let known = FailureCode::from_name(&code);
                Some(known.ok_or_else(|| {
                    fields.invalid("code", format!("`{}` is not a failure code", code.escape_debug()))
                })?)
            } else if code.is_some() {
                return Err(fields.invalid("code", format!("not allowed with result `{}`", result.name())));
            } else {
                None
            };
        Ok(Outcome { attempt, module, from, to, result, code })
    }

    /// Writes the canonical encoding of this `<outcome>` entry.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<outcome");
        write_number(out, "attempt", self.attempt);
        write_attribute(out, "module", &self.module);
        if let Some(from) = &self.from {
            write_attribute(out, "from", from);
        }
        write_attribute(out, "to", &self.to);
        write_attribute(out, "result", self.result.name());
        if let Some(code) = self.code {
            write_attribute(out, "code", code.name());
        }
        out.extend_from_slice(b"/>");
    }

    /// Copies every borrowed string.
    pub fn into_owned(self) -> Outcome<'static> {
        Outcome {
            attempt: self.attempt,
            module: Cow::Owned(self.module.into_owned()),
            from: self.from.map(|v| Cow::Owned(v.into_owned())),
            to: Cow::Owned(self.to.into_owned()),
            result: self.result,
            code: self.code,
        }
    }
}

/// `value` if it is a version (SPEC.md §6), kept as text.
fn checked_version<'a>(
    fields: &Fields<'_>,
    attribute: &'static str,
    value: Cow<'a, str>,
) -> Result<Cow<'a, str>, BodyError> {
    match Version::parse(&value) {
        Ok(_) => Ok(value),
        Err(e) => Err(fields.invalid(attribute, e.to_string())),
    }
}
