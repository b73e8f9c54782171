"""Object-wise material initialisation: a multimodal LLM's answer, validated, else a literature table.

EndoGSim initialises each segmented object's material with an MLLM (the paper's object-wise
material field; the prompt follows PhysFlow's: the object's image, what it is, the closest
material class, density and the class's parameters, answered as JSON). Here:

- `TABLE`: literature values for liver, kidney, fat, muscle, gallbladder, vessel and a steel tool,
  each number with its source (`MaterialValue.source`).
- `MaterialPrior(model_path)`: a `transformers` image-text model loaded from a local folder
  (`AutoProcessor` + `AutoModelForImageTextToText`, no network, no remote code) is shown the
  object's crop and label and asked for JSON; the answer is parsed and every field checked against
  physical ranges. A malformed answer or an unknown class falls back to the table entry of the
  label; a field out of range falls back to the table field. Every returned value records whether
  it came from the model or from the table (and which reference).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

__all__ = ["MaterialValue", "MaterialEstimate", "TABLE", "RANGES", "MaterialPrior", "parse_answer",
           "crop_object", "build_prompt"]

# --- literature table --------------------------------------------------------------------------
# Shear moduli G are converted with E = 2 G (1 + nu) at nu = 0.45 (soft tissue is quasi-incompressible;
# the explicit MPM needs nu below ~0.45 to keep a usable time step).
_PMB = "Phys Med Biol 2019 64:225001 Tab. 1"
_MM = "Mech Mater 2012 44:174 Tab. 3"
_MRE_MUSCLE_FAT = "MRE of thigh muscle and adipose tissue, PMC4580449"
_YIELD = "assumption: 0.1 E (no measured tissue yield stress in our sources)"


@dataclass(frozen=True)
class MaterialValue:
    value: float
    source: str  # "mllm:<model>" or "table:<reference>"


@dataclass
class MaterialEstimate:
    """One object's material; `model` is the MPM constitutive model ("rigid" for tools, which the
    simulator drives kinematically instead of simulating)."""

    label: str
    material_class: str
    model: str
    E: MaterialValue
    nu: MaterialValue
    density: MaterialValue
    yield_stress: MaterialValue
    notes: list[str] = field(default_factory=list)  # why anything fell back

    def sources(self) -> dict[str, str]:
        return {k: getattr(self, k).source for k in ("E", "nu", "density", "yield_stress")}

    def to_material(self, model: str | None = None, **kw):
        """`endogsim.physics.Material` for a deformable object (tools are not MPM materials); model
        overrides the table's constitutive model (the refinement fits E and nu, not the class)."""
        from endogsim.physics import Material

        if self.model == "rigid":
            raise ValueError(f"{self.label!r} is rigid: simulate it as a kinematic Tool, not a Material")
        return Material(model=model or self.model, E=self.E.value, nu=self.nu.value, density=self.density.value,
                        yield_stress=self.yield_stress.value, **kw)


def _entry(E, E_src, density, density_src, nu=0.45, nu_src="quasi-incompressible soft tissue, capped at 0.45",
           yield_stress=None, yield_src=_YIELD, model="viscoplastic_stvk"):
    return {"model": model, "E": MaterialValue(E, "table:" + E_src), "nu": MaterialValue(nu, "table:" + nu_src),
            "density": MaterialValue(density, "table:" + density_src),
            "yield_stress": MaterialValue(0.1 * E if yield_stress is None else yield_stress, "table:" + yield_src)}


TABLE: dict[str, dict] = {
    "liver": _entry(2 * 1.8e3 * 1.45, f"{_PMB}, shear modulus 1.8 kPa", 1060.0, _MM),
    "kidney": _entry(2 * 4.9e3 * 1.45, "J Magn Reson Imaging 2011 34:880, MRE shear 4.9 kPa at 45 Hz", 1050.0, _MM),
    "fat": _entry(2 * 3.04e3 * 1.45, f"{_MRE_MUSCLE_FAT}, shear 3.04 kPa", 950.0, _MM),
    "muscle": _entry(2 * 5.05e3 * 1.45, f"{_MRE_MUSCLE_FAT}, shear 3.9-6.2 kPa (midpoint)", 1050.0, _MM),
    "gallbladder": _entry(2 * 85e3 * 1.45, f"{_PMB}, shear modulus 85 kPa", 1060.0, _MM),
    # No vessel measurement in our sources: arterial wall moduli are reported in the 0.1-1 MPa range;
    # 0.5 MPa is an order-of-magnitude placeholder, labelled as such.
    "vessel": _entry(5e5, "order-of-magnitude placeholder for arterial wall (0.1-1 MPa), unverified",
                     1060.0, f"{_MM} (soft tissue)"),
    "steel tool": _entry(193e9, "stainless steel, 190-200 GPa", 8000.0, "stainless steel, 7900-8000 kg/m^3",
                         nu=0.3, nu_src="stainless steel", yield_stress=2.15e8,
                         yield_src="AISI 304 stainless steel yield strength ~215 MPa", model="rigid"),
}
CLASSES = tuple(TABLE)
_ALIASES = {"tool": "steel tool", "instrument": "steel tool", "grasper": "steel tool", "forceps": "steel tool",
            "steel": "steel tool", "gall bladder": "gallbladder", "adipose": "fat", "adipose tissue": "fat",
            "blood vessel": "vessel", "artery": "vessel", "vein": "vessel", "skeletal muscle": "muscle"}

# Physical plausibility checks for an answer (per category: soft tissue vs the rigid tool).
RANGES = {
    "tissue": {"E": (1e2, 1e7), "nu": (0.0, 0.4999), "density": (800.0, 1300.0), "yield_stress": (0.0, 1e7)},
    "rigid": {"E": (1e10, 5e11), "nu": (0.2, 0.4), "density": (6000.0, 9000.0), "yield_stress": (1e7, 3e9)},
}


def canonical_class(name: str) -> str | None:
    key = re.sub(r"[\s_-]+", " ", str(name).strip().lower())
    key = _ALIASES.get(key, key)
    return key if key in TABLE else None


def _category(cls: str) -> str:
    return "rigid" if TABLE[cls]["model"] == "rigid" else "tissue"


# --- prompting and parsing -----------------------------------------------------------------------

def build_prompt(label: str) -> str:
    return (f"The image shows one object from an endoscopic surgical video, labelled '{label}'. "
            f"What is it, and which material class is closest? Choose material_class from {list(CLASSES)}. "
            "Give its Young's modulus E in Pa, Poisson's ratio nu, density in kg/m^3 and von Mises yield "
            "stress in Pa. Answer with JSON only: "
            '{"material_class": "...", "E": 0, "nu": 0, "density": 0, "yield_stress": 0}')


def parse_answer(text: str) -> dict:
    """The first JSON object in the model's text; ValueError saying what is wrong otherwise."""
    start = text.find("{")
    if start < 0:
        raise ValueError("no JSON object in the answer")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed JSON: {e.msg}") from None
    return obj  # a dict: decoding starts at "{"


def crop_object(image: np.ndarray, mask: np.ndarray | None = None, pad: int = 8, size: int = 224):
    """PIL crop [size, size] of image [H, W, 3] (uint8 or float in [0, 1]) around mask [H, W]."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    if mask is not None:
        ys, xs = np.nonzero(np.asarray(mask))
        if len(ys) == 0:
            raise ValueError("crop_object: the object mask is empty")
        y0, y1 = max(ys.min() - pad, 0), min(ys.max() + pad + 1, img.shape[0])
        x0, x1 = max(xs.min() - pad, 0), min(xs.max() + pad + 1, img.shape[1])
        img = img[y0:y1, x0:x1]
    return Image.fromarray(img).resize((size, size))


class MaterialPrior:
    """Materials per object. `model_path`: a local folder with an image-text model and its processor
    (None: the table only). `generate_fn(image, prompt) -> str` replaces the model (other backends,
    tests with canned answers)."""

    def __init__(self, model_path: str | Path | None = None, *, generate_fn: Callable | None = None,
                 max_new_tokens: int = 96, device: str | None = None):
        self.name = None
        self._generate = generate_fn
        self.max_new_tokens = max_new_tokens
        if generate_fn is not None:
            self.name = getattr(generate_fn, "__name__", "custom")
        elif model_path is not None:
            path = Path(model_path)
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"MaterialPrior: no image-text model at {path} (expected config.json)")
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            self.model = AutoModelForImageTextToText.from_pretrained(
                path, local_files_only=True, use_safetensors=True).to(self.device).eval()
            self._generate = self._generate_hf
            self.name = path.name

    def _generate_hf(self, image, prompt: str) -> str:
        import torch

        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[text], images=[image], return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]

    def table(self, label: str, notes: list[str] | None = None) -> MaterialEstimate:
        cls = canonical_class(label)
        if cls is None:
            raise KeyError(f"MaterialPrior: no table entry for label {label!r}; known: {list(CLASSES)} "
                           f"(aliases {sorted(_ALIASES)})")
        e = TABLE[cls]
        return MaterialEstimate(label, cls, e["model"], e["E"], e["nu"], e["density"], e["yield_stress"],
                                list(notes or []))

    def estimate(self, label: str, image=None, mask=None) -> MaterialEstimate:
        """Material for the object `label` seen in image [H, W, 3] (cropped to mask [H, W] if given)."""
        if self._generate is None or image is None:
            return self.table(label, ["no model given" if self._generate is None else "no image given"])
        crop = crop_object(image, mask) if isinstance(image, np.ndarray) or hasattr(image, "shape") else image
        answer = self._generate(crop, build_prompt(label))
        return self.validate(label, answer)

    def validate(self, label: str, answer: str) -> MaterialEstimate:
        """Turn the model's text into an estimate, falling back to the table where it does not validate."""
        try:
            obj = parse_answer(answer)
        except ValueError as e:
            return self.table(label, [f"model answer rejected: {e}"])
        cls = canonical_class(obj.get("material_class", ""))
        if cls is None:
            return self.table(label, [f"model answer rejected: unknown material_class "
                                      f"{obj.get('material_class')!r}"])
        label_cls = canonical_class(label)
        if label_cls is not None and _category(label_cls) != _category(cls):
            return self.table(label, [f"model answer rejected: class {cls!r} ({_category(cls)}) contradicts "
                                      f"label {label!r} ({_category(label_cls)})"])
        base, notes = self.table(cls), []
        lim = RANGES[_category(cls)]
        vals = {}
        for key, (lo, hi) in lim.items():
            v = obj.get(key)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and lo <= v <= hi
            if ok:
                vals[key] = MaterialValue(float(v), f"mllm:{self.name}")
            else:
                vals[key] = getattr(base, key)
                notes.append(f"{key}={v!r} outside [{lo:g}, {hi:g}] or not a number: table value used")
        return MaterialEstimate(label, cls, TABLE[cls]["model"], notes=notes, **vals)
