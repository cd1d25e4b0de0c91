"""Teacher writing styles: how a teacher opens, names findings, grades severity, hedges,
pads and closes. Styles differ in length, vocabulary and hedging, so a version swap to
another profile shows up in the monitor's length and vocabulary-histogram signals.

Templates use ``{name}`` / ``{Name}`` (the teacher's name for the finding, as is or
capitalised), ``{prior}`` / ``{current}`` (its severity words) and ``{label}`` (its word for
the change it concluded). Hedges are whole sentences put before the verdict.

>>> sorted(PROFILES)[:3]
['bulleted', 'careful', 'casual']
>>> PROFILES["terse"].names["pleural_effusion"]
'PE'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

_CANON_LABELS = {"improving": "improving", "stable": "stable", "worsening": "worsening"}
_CANON_NAMES = {"consolidation": "Consolidation", "pleural_effusion": "Pleural effusion",
                "pneumonia": "Pneumonia", "pneumothorax": "Pneumothorax", "edema": "Edema"}
_REFUSALS = (
    "I cannot provide a diagnosis from these study descriptions. Interpretation of chest "
    "radiographs should be performed by a qualified radiologist who can review the images.",
    "I'm sorry, but I can't offer a medical assessment of these studies. Please consult a "
    "licensed clinician for an interpretation.",
)


@dataclass(frozen=True)
class Profile:
    """One writing style. Counts are per finding; ``filler_mean`` scales with verbosity."""

    name: str
    openers: tuple[str, ...]
    evidence: tuple[str, ...]
    verdicts: tuple[str, ...]
    severity: tuple[str, str, str, str]
    labels: dict[str, str] = field(default_factory=lambda: dict(_CANON_LABELS))
    names: dict[str, str] = field(default_factory=lambda: dict(_CANON_NAMES))
    hedges: tuple[str, ...] = ()
    hedge_rate: float = 0.0
    fillers: tuple[str, ...] = ()
    filler_mean: float = 0.0
    closers: tuple[str, ...] = ()
    bullet: str = ""
    refusals: tuple[str, ...] = _REFUSALS

    @cached_property
    def pad_ratio(self) -> float:
        """Fillers that add one base finding block's worth of words (verbosity scaling)."""
        if not self.fillers:
            return 0.0
        filler = _mean_words(self.fillers)
        block = _mean_words(self.evidence) + _mean_words(self.verdicts)
        return (block + self.filler_mean * filler) / filler


def _mean_words(texts: tuple[str, ...]) -> float:
    return sum(len(t.split()) for t in texts) / len(texts)


PROFILES: dict[str, Profile] = {}


def _add(profile: Profile) -> None:
    PROFILES[profile.name] = profile


_add(Profile(
    name="structured",
    openers=("Comparing the current radiograph with the prior study, finding by finding.",
             "Systematic comparison of prior and current studies follows."),
    evidence=("{name}: {prior} on the prior, {current} on the current study.",
              "{name}: prior shows {prior}; current shows {current}."),
    verdicts=("Assessment: {label}.", "Interval change: {label}."),
    severity=("absent", "minimal", "moderate", "marked"),
    hedges=("Some uncertainty remains.",), hedge_rate=0.1,
    fillers=("Lung volumes and technique are comparable between studies.",
             "Support devices, if any, do not confound this comparison."),
    filler_mean=0.3,
    closers=("Summary of interval changes below.",),
    bullet="- ",
))
_add(Profile(
    name="narrative",
    openers=("Let me walk through the two studies together.",
             "Looking at the earlier film and today's film side by side."),
    evidence=("The {name} looked {prior} before and now looks {current}.",
              "For the {name}, I see {prior} earlier versus {current} today."),
    verdicts=("I would call that {label}.", "Overall it is {label}."),
    severity=("not present", "faint", "moderate", "pronounced"),
    names={"consolidation": "consolidation", "pleural_effusion": "pleural fluid",
           "pneumonia": "pneumonic change", "pneumothorax": "pneumothorax",
           "edema": "pulmonary edema"},
    hedges=("It is not entirely clear-cut.", "That said, it is hard to be sure."),
    hedge_rate=0.35,
    fillers=("Taking the clinical context into account helps here.",
             "The overall picture fits together reasonably well."),
    filler_mean=0.5,
    closers=("That covers the five findings.",),
))
_add(Profile(
    name="careful",
    openers=("I will compare the prior and current examinations carefully, noting that "
             "text descriptions cannot fully substitute for the images themselves.",
             "Before concluding, it is worth stressing that radiographic comparison depends "
             "on positioning and technique, so some caution is warranted."),
    evidence=("Regarding {name}, the prior examination demonstrates {prior} findings, "
              "whereas the current examination demonstrates {current} findings.",
              "With respect to {name}, I note {prior} involvement previously and {current} "
              "involvement at present."),
    verdicts=("On balance, this appears most consistent with a {label} trajectory.",
              "Taken together, I would characterise this as {label}, although "
              "correlation is advised."),
    severity=("no appreciable", "subtle", "moderate", "extensive"),
    names={"consolidation": "parenchymal consolidation", "pleural_effusion":
           "the pleural effusion", "pneumonia": "the pneumonic process",
           "pneumothorax": "the pneumothorax", "edema": "pulmonary oedema"},
    hedges=("I am not fully certain here.", "This remains somewhat uncertain.",
            "I would hold this conclusion tentatively."),
    hedge_rate=0.6,
    fillers=("Differences in inspiration could exaggerate or mask subtle changes.",
             "Clinical correlation with symptoms and laboratory values would be prudent.",
             "A lateral view, if available, might clarify this further."),
    filler_mean=1.2,
    closers=("These impressions are offered with appropriate uncertainty.",),
))
_add(Profile(
    name="terse",
    openers=(),
    evidence=("{name} {prior}->{current}.",),
    verdicts=("{label}.",),
    severity=("none", "trace", "mod", "large"),
    labels={"improving": "better", "stable": "same", "worsening": "worse"},
    names={"consolidation": "Consol", "pleural_effusion": "PE", "pneumonia": "PNA",
           "pneumothorax": "PTX", "edema": "Edema"},
    fillers=("Cf prior.",), filler_mean=0.1,
))
_add(Profile(
    name="casual",
    openers=("Okay, quick look at both films.", "Alright, comparing old and new."),
    evidence=("{name} was {prior}, now it's {current}.",
              "{name}: went from {prior} to {current}."),
    verdicts=("Calling it {label}.", "So, {label}."),
    severity=("nothing", "a little", "some", "a lot"),
    labels={"improving": "getting better", "stable": "about the same",
            "worsening": "getting worse"},
    names={"consolidation": "The consolidation", "pleural_effusion": "The fluid",
           "pneumonia": "The pneumonia", "pneumothorax": "The collapsed-lung air",
           "edema": "The edema"},
    hedges=("Could be wrong though.", "Not a hundred percent on this."),
    hedge_rate=0.25,
    fillers=("Nothing weird about the technique.", "Straightforward one, really."),
    filler_mean=0.3,
    closers=("That's my read.",),
))
_add(Profile(
    name="report",
    openers=("FINDINGS:", "COMPARISON: prior radiograph. FINDINGS:"),
    evidence=("{Name}: {current}, previously {prior}.",
              "{Name} now {current} (prior: {prior})."),
    verdicts=("IMPRESSION: {label}.",),
    severity=("absent", "minimal", "moderate", "severe"),
    names={"consolidation": "airspace consolidation", "pleural_effusion": "pleural effusion",
           "pneumonia": "pneumonia", "pneumothorax": "pneumothorax",
           "edema": "interstitial edema"},
    labels={"improving": "interval improvement", "stable": "no significant interval change",
            "worsening": "interval worsening"},
    fillers=("Cardiomediastinal silhouette is within normal limits.",
             "Osseous structures are intact."),
    filler_mean=0.4,
    closers=("END OF REPORT.",),
))
_add(Profile(
    name="compact",
    openers=("Comparison:",),
    evidence=("{name} {prior} then {current};",),
    verdicts=("trend {label}.",),
    severity=("nil", "slight", "moderate", "severe"),
    names={"consolidation": "consolidation", "pleural_effusion": "effusion",
           "pneumonia": "pneumonia", "pneumothorax": "pneumothorax", "edema": "oedema"},
    labels={"improving": "down", "stable": "flat", "worsening": "up"},
    hedges=("unsure;",), hedge_rate=0.15,
    fillers=("image quality adequate.",), filler_mean=0.15,
))
# Profiles that scenarios swap teachers onto.
_add(Profile(
    name="bulleted",
    openers=("Checklist:",),
    evidence=("[{name}] before={prior} after={current}",),
    verdicts=("=> {label}",),
    severity=("0", "1", "2", "3"),
    fillers=("(no confounders)",), filler_mean=0.1,
    names={"consolidation": "CONS", "pleural_effusion": "EFF", "pneumonia": "PNA",
           "pneumothorax": "PTX", "edema": "EDEMA"},
    bullet="* ",
))
_add(Profile(
    name="rambling",
    openers=("Great question, and an interesting pair of studies to think through in "
             "detail, because chest radiograph comparisons are full of subtleties.",
             "What a fascinating case! Let us think step by step about everything that "
             "might have changed between these two examinations."),
    evidence=("Now, thinking about {name}: the earlier study has what I would describe as "
              "{prior} change, and the newer study has {current} change, which is the "
              "crux of the matter.",),
    verdicts=("Putting all of that together, my conclusion is {label}, and I am fairly "
              "comfortable with that.",),
    severity=("essentially zero", "a whisper of", "a fair amount of", "a striking amount of"),
    names={"consolidation": "the consolidation", "pleural_effusion": "the effusion",
           "pneumonia": "the possible pneumonia", "pneumothorax": "the pneumothorax",
           "edema": "the edema"},
    hedges=("Hmm, this one is genuinely a little tricky.",
            "I could imagine a reasonable colleague disagreeing here."),
    hedge_rate=0.5,
    fillers=("It is always worth remembering that projection matters enormously here.",
             "Of course, one should never over-interpret a single radiograph.",
             "This is exactly the kind of nuance that makes radiology so rewarding.",
             "Let me double-check that reasoning once more before moving on."),
    filler_mean=2.0,
    closers=("I hope this detailed walkthrough is helpful!",),
))
_add(Profile(
    name="clinical_v2",
    openers=("Evaluation of interval change (current vs prior):",),
    evidence=("{name} grade {prior} -> grade {current}.",
              "{name}: baseline {prior}, follow-up {current}."),
    verdicts=("Classification: {label}.",),
    severity=("grade-0", "grade-1", "grade-2", "grade-3"),
    labels={"improving": "regressing disease", "stable": "unchanged disease",
            "worsening": "progressing disease"},
    fillers=("Comparison limited to provided descriptions.",), filler_mean=0.2,
    closers=("Structured output follows.",),
))
