"""xnat-drop's configuration keys: one `Option` each, in the order of the example file.

This table is the one source of the keys, their defaults, limits and documentation:
config.parse reads with it and etc/xnat-drop.toml is `example()`'s text (a test keeps the two
equal). Choices are `Literal` types so the Config's fields say which strings they can hold.
Pure: no I/O.
"""

from __future__ import annotations

from typing import Literal, get_args

from xnat_drop.core.model import Policy
from xnat_drop.core.schema import Check, Kind, Option, render
from xnat_drop.core.seenoptions import SEEN
from xnat_drop.core.transportoptions import TRANSPORT_OPTIONS, TRANSPORTS

Observer = Literal["inotify", "polling"]
Destination = Literal["prearchive", "archive"]
OnExisting = Literal["reject", "append", "replace"]
LogLevel = Literal["debug", "info", "warning", "error"]
PhiCheck = Literal["off", "reject"]
DepthCheck = Literal["reject", "off"]
IncompleteSeries = Literal["reject", "accept"]
SeriesFilterPolicy = Literal["exclude", "reject", "off"]
RoutingSource = Literal["layout", "dicom", "template", "default"]
OnConflict = Literal["reject", "overwrite"]
OBSERVERS: tuple[Observer, ...] = get_args(Observer)
DESTINATIONS: tuple[Destination, ...] = get_args(Destination)
ON_EXISTING: tuple[OnExisting, ...] = get_args(OnExisting)
LOG_LEVELS: tuple[LogLevel, ...] = get_args(LogLevel)
PHI_CHECKS: tuple[PhiCheck, ...] = get_args(PhiCheck)
DEPTH_CHECKS: tuple[DepthCheck, ...] = get_args(DepthCheck)
INCOMPLETE_SERIES: tuple[IncompleteSeries, ...] = get_args(IncompleteSeries)
SERIES_FILTER_POLICIES: tuple[SeriesFilterPolicy, ...] = get_args(SeriesFilterPolicy)
ROUTING_SOURCES: tuple[RoutingSource, ...] = get_args(RoutingSource)
ON_CONFLICT: tuple[OnConflict, ...] = get_args(OnConflict)
POLICIES = tuple(policy.value for policy in Policy)
COMPRESSIONS = ("auto", "stored", "deflate")
# Rules whose offending files can be left out of an upload instead of rejecting the session.
EXCLUDABLE_RULES = (
    "nifti",
    "derived-series",
    "non-dicom",
    "unreadable-dicom",
    "resource-layout",
    "resource-label",
    "resource-name",
    "dicom-in-resources",
)
# Rules that always reject: a policy key for them is refused with this explanation.
REJECT_ONLY_RULES = (
    "mixed-studies",
    "no-dicom",
    "duplicate-instance",
    "unsafe-file",
    "bad-label",
    "size-limit",
)
# Anchored, because GE and Philips often leave derived images unmarked and a bare "FA" would
# also match "FAT_SAT" (dicom-notes.md §1). Searched case-insensitively in SeriesDescription.
DEFAULT_DESCRIPTION_PATTERNS = (
    r"_ADC$",
    r"_FA$",
    r"_ColFA$",
    r"_TRACEW$",
    r"_TENSOR$",
    r"MoCoSeries",
    r"_MPR_(cor|sag|tra)$",
    r"_MIP_(cor|sag|tra)$",
)
DEFAULT_KEEP_TOKENS = ("UNI",)  # MP2RAGE's uniform image: DERIVED\PRIMARY\M\ND\UNI
DEFAULT_KEEP_PATTERNS = (r"_UNI_Images$",)
DEFAULT_PHI_TAGS = (
    "PatientName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "OtherPatientNames",
    "PatientMotherBirthName",
)

HEADER = """
    # xnat-drop configuration: install as /etc/xnat-drop/config.toml
    # Check it with: xnat-drop check-config --config /etc/xnat-drop/config.toml
    # Every key is optional unless marked "required"; the values shown are the defaults.
    # Relative paths are taken from this file's folder. Unknown keys are errors (typos show up).
    # (Written from the option table in xnat_drop/core/options.py: change it there.)
"""

_PATHS = (
    Option("paths", "root", Kind.PATH, None, example="/srv/xnat-drop", comment="""
        Required (or set incoming, done, failed and work one by one): the drop tree on the share.
        Lab members drop session folders into <root>/incoming/; the daemon moves each one to
        <root>/done/ or <root>/failed/ with a report beside it. All four folders must be on one
        filesystem, so every move is an atomic rename.
    """),
    Option("paths", "incoming", Kind.PATH, None, example="/srv/xnat-drop/incoming",
           commented=True, note="where sessions are dropped (the only watched tree)"),
    Option("paths", "done", Kind.PATH, None, example="/srv/xnat-drop/done",
           commented=True, note="delivered sessions, each with a .report.txt receipt"),
    Option("paths", "failed", Kind.PATH, None, example="/srv/xnat-drop/failed",
           commented=True, note="rejected sessions, each with a .report.txt saying why"),
    Option("paths", "work", Kind.PATH, None, example="/srv/xnat-drop/.work",
           commented=True, note="sessions being processed (hidden from lab members)"),
    Option("paths", "state_dir", Kind.PATH, None, example="/var/lib/xnat-drop", comment="""
        Where the daemon keeps its own state. Default: $STATE_DIRECTORY (set by systemd's
        StateDirectory=), else /var/lib/xnat-drop.
    """),
)  # fmt: skip

_WATCH = (
    Option("watch", "observer", Kind.TEXT, "inotify", choices=OBSERVERS, comment="""
        "inotify" sees local writes at once. Use "polling" when lab members write over SMB/NFS
        from other machines: inotify on the server never hears about those writes.
    """),
    Option("watch", "poll_interval_seconds", Kind.SECONDS, 5, minimum=0.1, comment="""
        With observer = "polling": seconds between looks at the tree.
    """),
    Option("watch", "rescan_seconds", Kind.SECONDS, 60, minimum=0.1, comment="""
        Seconds between full rescans of incoming/, whatever the watcher reports (the safety net).
    """),
    Option("watch", "settle_seconds", Kind.SECONDS, 60, minimum=0.0, comment="""
        A session folder is taken only after its files (names, count, sizes, newest mtime) stayed
        the same for this many seconds. Raise it for slow copies over VPN.
    """),
    Option("watch", "ready_marker", Kind.TEXT, "", check=Check.FILE_NAME, comment="""
        A file that must also be in a session folder before it is taken, e.g. "READY", written
        last by the export script; it is never uploaded. "" = none: a stable folder is taken.
    """),
    Option("watch", "max_settle_seconds", Kind.SECONDS, 6 * 3600, minimum=1.0, comment="""
        A folder still not taken after this many seconds (6 hours) is reported once in the log
        and in `xnat-drop status`: is the copy stuck? A session held as incomplete (see
        rules.incomplete-series) waits this long, from when it was first seen.
    """),
)  # fmt: skip

_XNAT = (
    Option("xnat", "url", Kind.TEXT, "", example="https://xnat.example.org", comment="""
        Required: XNAT's base URL (with the context path if any, e.g. https://host/xnat).
    """),
    Option("xnat", "secret_file", Kind.PATH, "", example="/etc/xnat-drop/xnat-secret",
           comment="""
        The file holding one line USER:SECRET (an XNAT alias token and its secret is best).
        It must not be readable by group or others (chmod 600). Under systemd, prefer
        LoadCredential=xnat-secret:/etc/xnat-drop/xnat-secret, which takes precedence.
        Never put the secret itself in this file. "" = no file: the credential or ~/.netrc.
    """),
    Option("xnat", "verify_tls", Kind.FLAG, True, comment="""
        Verify XNAT's TLS certificate. Leave true; for an in-house CA use ca_bundle instead.
        false logs a warning at every start and reconnect: without verification anyone on the
        network path can pose as XNAT and intercept the XNAT password.
    """),
    Option("xnat", "ca_bundle", Kind.TEXT, "", comment="""
        The CA certificates XNAT's certificate must be signed by:
          ""          the operating system's store (the bundle file OpenSSL uses, e.g.
                      /etc/ssl/certs/ca-certificates.crt or /etc/pki/tls/certs/ca-bundle.crt;
                      if none is found, certifi's bundle, with a warning in the log)
          "certifi"   the bundle of Python's certifi package (Mozilla's list)
          a path      a PEM file, e.g. your in-house CA: "/etc/xnat-drop/ca.pem"
    """),
    Option("xnat", "connect_timeout_seconds", Kind.SECONDS, 10, minimum=0.1, comment="""
        Seconds to wait for a TCP connection to XNAT.
    """),
    Option("xnat", "read_timeout_seconds", Kind.SECONDS, 600, minimum=1.0, comment="""
        Seconds to wait for XNAT to answer; XNAT imports while receiving and answers at the end.
    """),
    Option("xnat", "check_interval_seconds", Kind.SECONDS, 900, minimum=1.0, comment="""
        Seconds between the daemon's checks of its XNAT account (a fresh login, XNAT's
        version, and an alias token's expiry, warned of a day ahead). Also checked at start.
    """),
    Option("xnat", "allow_plain_http", Kind.FLAG, False, comment="""
        http:// is refused for anything but localhost, since it would send the password in clear.
    """),
    Option("xnat", "destination", Kind.TEXT, "prearchive", choices=DESTINATIONS, comment="""
        Where a session ends once its series and instance counts are verified: "prearchive"
        builds it and leaves it READY in XNAT's prearchive for review; "archive" commits it
        and verifies it again in the archive.
    """),
    Option("xnat", "on_existing", Kind.TEXT, "reject", choices=ON_EXISTING, comment="""
        When XNAT already holds the session (in the archive by label or StudyInstanceUID, or in
        the prearchive): "reject" sends it to failed/ as session-exists with the XNAT URL;
        "append" adds to the existing session; "replace" lets the new files win (XNAT's
        overwrite) and replaces a prearchive copy.
    """),
    Option("xnat", "transport", Kind.TEXT, "import", choices=TRANSPORTS, comment="""
        How the DICOM files reach XNAT: "import" sends them as a zip over HTTP; "inbox" puts
        hard links to them in XNAT's inbox (a folder the XNAT server mounts too, see [inbox])
        and asks XNAT to import them in place: no byte goes over HTTP; "cstore" sends each
        object to XNAT's DICOM receiver (see [cstore]), routed by a line in PatientComments.
    """),
)  # fmt: skip

_ROUTING = (
    Option("routing", "layout", Kind.TEXT, "project/subject/session", comment="""
        How session folders are laid out below incoming/, as levels joined by "/": "project",
        "subject", "session", or "*" for a level whose name is not a label (e.g. a date folder).
        The deepest level is the session folder. E.g. "project/subject/session", "subject/session",
        "session", "project/*".
    """),
    Option("routing", "order", Kind.STRINGS, ROUTING_SOURCES, comment="""
        Where each label comes from: the first source in this list that gives a value wins.
          "layout"   the folder names (levels named in layout above)
          "dicom"    XNAT's own convention "Project: P1 Subject: S01 Session: S01_MR1" in
                     PatientComments/StudyComments/AdditionalPatientHistory, or
                     "xnat://P1/S01/S01_MR1" in StudyDescription
          "template" the *_template settings below
          "default"  the project/subject/session settings below
    """),
    Option("routing", "project", Kind.TEXT, "", comment="""
        Fixed labels for the "default" source ("" = none).
    """),
    Option("routing", "subject", Kind.TEXT, ""),
    Option("routing", "session", Kind.TEXT, ""),
    Option("routing", "project_template", Kind.TEXT, "", comment="""
        Labels built from DICOM attributes for the "template" source, e.g. "{PatientID}" or
        "{PatientID}_{StudyDate}" ("" = none). Every file must give the same result.
    """),
    Option("routing", "subject_template", Kind.TEXT, ""),
    Option("routing", "session_template", Kind.TEXT, ""),
    Option("routing", "sanitize_labels", Kind.FLAG, False, comment="""
        Labels must match [A-Za-z0-9_-]{1,64}, or the session goes to failed/ with a suggestion.
        true: map characters the way XNAT does at archive time (space . / : and others become _)
        and say so in the report.
    """),
)  # fmt: skip

_RULES = (
    Option("rules", "nifti", Kind.TEXT, "reject", choices=POLICIES, comment="""
        What a broken rule does: "reject" sends the whole session to failed/; "exclude" leaves
        the offending files or series out of the upload, lists them in the report, and uploads
        the rest. Only these four rules and the four resource rules below can exclude; all others
        always reject: mixed-studies, duplicate-instance, unsafe-file (links, FIFOs, devices),
        size-limit, no-dicom and bad-label.
    """, note="converted data: NIfTI, Analyze, MINC, MGH, NRRD, side-cars, .bval"),
    Option("rules", "derived-series", Kind.TEXT, "reject", choices=POLICIES,
           note="scanner-derived series: MoCo, ADC/FA/TRACEW maps, MPR, MIP, SC, SEG"),
    Option("rules", "non-dicom", Kind.TEXT, "reject", choices=POLICIES,
           note="any other file that is not DICOM (PDF, text, archives, .dcm.gz, ...)"),
    Option("rules", "unreadable-dicom", Kind.TEXT, "reject", choices=POLICIES,
           note="truncated, damaged or empty, or DICOM without the UIDs XNAT needs"),
    Option("rules", "resource-layout", Kind.TEXT, "reject", choices=POLICIES, comment="""
        The resources folder of a session (see [resources]): "exclude" leaves the files these
        rules name out of the delivery and delivers the rest.
    """, note="a file directly in resources/, not in a resource's folder"),
    Option("rules", "resource-label", Kind.TEXT, "reject", choices=POLICIES,
           note="a resource folder name XNAT cannot use, or not in resources.labels"),
    Option("rules", "resource-name", Kind.TEXT, "reject", choices=POLICIES,
           note="a file or folder name in a resource that XNAT would not store as it is"),
    Option("rules", "dicom-in-resources", Kind.TEXT, "reject", choices=POLICIES,
           note="DICOM in resources/: it belongs with the images"),
    Option("rules", "incomplete-series", Kind.TEXT, "reject", choices=INCOMPLETE_SERIES,
           comment="""
        A series with fewer images than its headers announce (InstanceNumber holes,
        ImagesInAcquisition, NumberOfTemporalPositions, NumberOfFrames; see the README) is
        held in incoming/ while its copy may still be running, and judged again when its files
        change. "reject": still incomplete after watch.max_settle_seconds, it goes to failed/
        as incomplete-series; "accept": such series are not checked, sessions are sent as
        they are.
    """),
    Option("rules", "series-import-filter", Kind.TEXT, "exclude", choices=SERIES_FILTER_POLICIES,
           comment="""
        XNAT's own series import filter (the project's and the site's, read from XNAT before each
        upload): XNAT silently drops the DICOM objects it matches. "exclude" leaves out exactly
        what XNAT would drop, names it in the report, and verifies the rest; "reject" sends the
        session to failed/ listing those series; "off" does not read the filter (a dropped
        series then fails verification as count-mismatch).
    """),
    Option("rules", "extra_derived_markers", Kind.STRINGS, (), comment="""
        More ImageType/FrameType values that mark a derived image at your site.
    """),
    Option("rules", "derived_description_patterns", Kind.STRINGS, DEFAULT_DESCRIPTION_PATTERNS,
           check=Check.REGEX, comment="""
        SeriesDescription patterns (regular expressions, case-insensitive) of derived series,
        for vendors that do not mark them in ImageType. Keep them anchored: a bare "FA" would
        also match "FAT_SAT".
    """),
    Option("rules", "keep_image_types", Kind.STRINGS, DEFAULT_KEEP_TOKENS, comment="""
        Series labelled derived that the lab keeps anyway (MP2RAGE's UNI image): ImageType values
        and SeriesDescription patterns. Each entry exempts only its own marker (and the DERIVED or
        SECONDARY label the vendor gives that image): a kept UNI series that is also MoCo is still
        derived. Secondary captures, segmentations and reports never pass.
    """),
    Option("rules", "keep_description_patterns", Kind.STRINGS, DEFAULT_KEEP_PATTERNS,
           check=Check.REGEX),
    Option("rules", "max_file_size", Kind.SIZE, "", comment="""
        Size limits (rule size-limit, always rejects), off by default: "" or 0 means no limit.
        A size is a number of bytes or text such as "4 GiB" or "500 GB". Sensible values: a file
        "4 GiB" (the largest a DICOM image element can be; raw k-space objects are bigger and
        rejected anyway), a session "500 GB" (ten times a long multi-band fMRI session). Files with
        more than 64 KiB after their image data, or headers over the built-in limits (64 MiB
        inflated, 16 MiB per element, 256 MiB in all), are unreadable-dicom whatever is set here.
    """),
    Option("rules", "max_session_size", Kind.SIZE, ""),
    Option("rules", "phi", Kind.TEXT, "off", choices=PHI_CHECKS, comment="""
        Optional PHI check: "reject" requires the attributes in phi_tags to be empty or equal to
        the subject label in every file; "off" skips it. Reports never repeat the values.
    """),
    Option("rules", "phi_tags", Kind.STRINGS, DEFAULT_PHI_TAGS, check=Check.KEYWORD),
    Option("rules", "wrong-depth", Kind.TEXT, "reject", choices=DEPTH_CHECKS, comment="""
        Sessions dropped at the wrong folder level: "reject" sends to failed/ the folders side by
        side that hold different series of one study (a session dropped one level too high, its
        series folders taken for sessions), and a session whose folder looks like a date or a
        series folder when the DICOM routing source or a template names another session (one
        level too deep). "off" skips both checks.
    """),
)  # fmt: skip

_RESOURCES = (
    Option("resources", "folder", Kind.TEXT, "resources", check=Check.FILE_NAME, comment="""
        Files a session delivers as XNAT session resources (physiological recordings, logs,
        notes) go in this folder of the session folder, one folder per resource label:
        <session>/resources/physio/run1/ecg.tsv is the file "run1/ecg.tsv" of the resource
        "physio". They are uploaded as they are, archives too (never unpacked), after the
        images are verified. The name is matched ignoring case, only directly in the session
        folder. "" = no resources folder: every file is judged as an image file.
    """),
    Option("resources", "labels", Kind.STRINGS, (), comment="""
        The resource labels the lab allows, e.g. ["physio", "logs", "notes"] (rule
        resource-label). [] = any label XNAT can use: a letter, then up to 63 letters, digits,
        "_" or "-", and not NULL, DICOM or SNAPSHOTS.
    """),
    Option("resources", "allow_converted", Kind.FLAG, False, comment="""
        true lets converted data (NIfTI, MINC, MGH, NRRD, side-cars) be delivered as resources;
        false: such files are nifti violations there too.
    """),
    Option("resources", "on_conflict", Kind.TEXT, "reject", choices=ON_CONFLICT, comment="""
        When XNAT already holds a different file of the same name in that resource: "reject"
        sends the session to failed/ naming the file; "overwrite" replaces XNAT's file.
    """),
)  # fmt: skip

_REST = (
    Option("zip", "compression", Kind.TEXT, "auto", choices=COMPRESSIONS, comment="""
        "auto" compresses the upload, in parallel, only while the link to XNAT is slower than
        compressing (a VPN, 100 Mbit/s) and sends it as it is on a fast one; "deflate" always
        compresses; "stored" never does. A compressed upload goes out chunked, which XNAT
        reads from 1.7.6 on: to an older XNAT, or one that does not say its version, both
        store. Either way every file is read once and XNAT stores the same DICOM files.
    """),
    Option("zip", "threads", Kind.COUNT, 0, minimum=0, comment="""
        Threads compressing at once; 0 = one per CPU core, at most 4.
    """),
    Option("retry", "first_delay_seconds", Kind.SECONDS, 30, minimum=0.01, comment="""
        After XNAT was unreachable or busy, wait this long before the first retry...
    """),
    Option("retry", "max_delay_seconds", Kind.SECONDS, 3600, minimum=0.01, comment="""
        ...then twice as long each time, up to this (with random jitter).
    """),
    Option("retry", "max_attempts", Kind.COUNT, 5, minimum=1, comment="""
        Outages never spend attempts. Other failures (a 500 that a probe shows is not an outage,
        an unexpected error) are retried with the same backoff until this many attempts failed;
        then the session goes to failed/ with their history.
    """),
    Option("report", "time_zone", Kind.TEXT, "", check=Check.TIME_ZONE, comment="""
        The time zone of the times in the text reports and in `xnat-drop status`, an IANA name
        such as "Europe/Berlin". "" = the system's (TZ, else /etc/localtime). The JSON reports
        keep ISO 8601 times in UTC.
    """),
    Option("log", "level", Kind.TEXT, "info", choices=LOG_LEVELS, comment="""
        "debug", "info", "warning" or "error". Under systemd the journal keeps the log.
    """),
    Option("service", "stop_timeout_seconds", Kind.SECONDS, 60, minimum=1.0, comment="""
        On SIGTERM (systemctl stop) the current step may finish within this many seconds; then
        it is left in .work/ and resumes at the next start. Keep the unit's TimeoutStopSec=
        above it.
    """),
)  # fmt: skip

OPTIONS: tuple[Option, ...] = (
    _PATHS + _WATCH + _XNAT + TRANSPORT_OPTIONS + _ROUTING + _RULES + _RESOURCES + _REST + SEEN
)


def example() -> str:
    """The text of etc/xnat-drop.toml: every option with its default and comment."""
    return render(OPTIONS, HEADER)
