"""The demo time-series dataset ``sits_demo``: SYNTHETIC Sentinel-2-like series, made here.

Nothing in it was observed by a satellite. Each file is one 64 x 64 px "location" of fields
(Voronoi parcels), each field one of eight land-cover classes, seen on 12-20 dates of 2021 in
the 13 Sentinel-2 MSI bands, with clouds, cloud shadows, snow and no-data swaths marked in a
Landsat-CFmask-style QA band. It is built so that one date is not enough: the crops share the
same spectra and differ by *when* they green up and are harvested.

How a pixel's reflectance is made, date by date:

- **Phenology** (the green-cover fraction v(t), 0..1) follows the double-logistic curve of
  Beck et al. (2006, Remote Sensing of Environment 100:321-334, eq. 3)::

      v(t) = vmin + (vmax - vmin) * (1 / (1 + exp(-(t - sos) / r1)) - 1 / (1 + exp(-(t - eos) / r2)))

  with per-class start (sos) and end (eos) of season and rates (``CLASSES`` below), jittered
  per field (+-7 days, +-0.05 cover) so that classes overlap on any single date.
- **Spectrum** = v * canopy + (1 - v) * background, where the background is bare soil before
  the season and a mix of soil and dry residue after it (``residue`` of the class); the soil's
  brightness varies per field (x 0.8-1.2); 3 % multiplicative and 0.005 additive pixel noise.
- **Endmember spectra** (surface reflectance per Sentinel-2 band, ``SPECTRA``): approximate
  values of typical reflectance curves of green crop canopy, broadleaf forest canopy, dry
  straw/stubble, bare loam soil, clear inland water, snow and thick cloud, as found in the USGS
  Spectral Library Version 7 (Kokaly et al. 2017, USGS Data Series 1035, doi:10.3133/ds1035)
  and in the Sentinel-2 User Handbook (ESA 2015, fig. of typical spectral signatures), rounded
  and read off at the band centres; B10 (cirrus, 1375 nm) is near 0 at the surface.
- **Clouds**: per date, clear (50 %), partly (30 %) or mostly (20 %) cloudy; cloud shapes are
  smooth random fields, shadows the clouds shifted by (5, 7) px and darkened to 35 %; winter
  dates may have snow; 10 % of dates lose a corner swath as no-data (reflectance 0).
- **QA band** (``qa``, uint8, CFmask codes): 0 clear land, 1 clear water, 2 cloud shadow,
  3 snow, 4 cloud, 255 fill: the default ``ingestion.series.qa`` mapping reads it.

Files: ``series`` uint16 (T, 64, 64, 13) reflectance x 10000 (layout ``THWC``), ``dates``
(ISO strings), ``qa``, ``labels`` (uint8, 1..8, with ``class_names`` from index 0),
``wavelengths`` (nm). Everything is drawn from ``numpy.random.default_rng(seed + location)``
and written without timestamps, so the same parameters always give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass

import h5py
import numpy as np

BAND_NAMES = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
WAVELENGTHS_NM = [443, 490, 560, 665, 705, 740, 783, 842, 865, 945, 1375, 1610, 2190]  # band centres (S2A MSI)
YEAR = 2021

# Surface reflectance (0..1) per band, B01..B12 (see the module docstring for the sources).
SPECTRA = {
    "crop": [0.030, 0.035, 0.070, 0.035, 0.110, 0.300, 0.380, 0.420, 0.430, 0.420, 0.010, 0.220, 0.110],
    "forest": [0.020, 0.025, 0.050, 0.025, 0.080, 0.220, 0.280, 0.310, 0.320, 0.310, 0.008, 0.150, 0.070],
    "dry": [0.060, 0.070, 0.100, 0.130, 0.170, 0.220, 0.250, 0.280, 0.290, 0.290, 0.010, 0.380, 0.280],
    "soil": [0.070, 0.090, 0.130, 0.170, 0.200, 0.220, 0.240, 0.260, 0.270, 0.270, 0.010, 0.330, 0.280],
    "water": [0.060, 0.055, 0.045, 0.025, 0.015, 0.010, 0.008, 0.007, 0.006, 0.004, 0.001, 0.003, 0.002],
    "snow": [0.850, 0.850, 0.850, 0.820, 0.800, 0.780, 0.750, 0.720, 0.700, 0.600, 0.020, 0.080, 0.050],
    "cloud": [0.450, 0.450, 0.450, 0.460, 0.470, 0.480, 0.480, 0.480, 0.480, 0.400, 0.350, 0.380, 0.280],
}


@dataclass(frozen=True)
class Phenology:
    """A class's double-logistic green-cover curve (days of year) and what covers the ground."""

    vmin: float
    vmax: float
    sos: float
    r1: float
    eos: float
    r2: float
    residue: float  # share of dry residue in the background after the season
    canopy: str = "crop"


# Label value = position + 1 (0 = unlabelled). Timings are typical of central European crops.
CLASSES: dict[str, Phenology] = {
    "winter_wheat": Phenology(0.15, 0.90, 75, 10, 185, 8, 0.7),
    "spring_barley": Phenology(0.00, 0.85, 120, 8, 205, 7, 0.6),
    "maize": Phenology(0.00, 0.90, 165, 9, 265, 10, 0.5),
    "sunflower": Phenology(0.00, 0.75, 145, 9, 235, 8, 0.8),
    "grassland": Phenology(0.45, 0.85, 95, 15, 285, 15, 0.3),
    "deciduous_forest": Phenology(0.20, 0.95, 115, 6, 290, 8, 1.0, canopy="forest"),
    "fallow": Phenology(0.00, 0.20, 100, 20, 250, 20, 0.2),
    "water": Phenology(0.00, 0.00, 0, 1, 0, 1, 0.0, canopy="water"),
}
CLASS_NAMES = ["unlabelled", *CLASSES]
QA_CLEAR_LAND, QA_CLEAR_WATER, QA_SHADOW, QA_SNOW, QA_CLOUD, QA_FILL = 0, 1, 2, 3, 4, 255


def green_cover(doy: np.ndarray, p: Phenology, shift_sos: float = 0.0, shift_eos: float = 0.0,
                vmax_delta: float = 0.0) -> np.ndarray:
    """Beck et al.'s double logistic v(t) at days ``doy`` (any shape)."""
    vmax = np.clip(p.vmax + vmax_delta, p.vmin, 1.0)
    rise = 1.0 / (1.0 + np.exp(-(doy - p.sos - shift_sos) / p.r1))
    fall = 1.0 / (1.0 + np.exp(-(doy - p.eos - shift_eos) / p.r2))
    return p.vmin + (vmax - p.vmin) * (rise - fall)


def class_reflectance(name: str, doy: np.ndarray, soil_brightness: float = 1.0, shift_sos: float = 0.0,
                      shift_eos: float = 0.0, vmax_delta: float = 0.0) -> np.ndarray:
    """Noise-free reflectance (len(doy), 13) of a field of class ``name`` on days ``doy``."""
    p = CLASSES[name]
    spectra = {k: np.asarray(v) for k, v in SPECTRA.items()}
    doy = np.asarray(doy, dtype=np.float64)[:, None]
    if p.canopy == "water":
        bloom = 0.015 * np.exp(-((doy - 200) / 40) ** 2)  # a summer algal bloom raises green and red-edge
        return spectra["water"] + bloom * np.exp(-((np.asarray(WAVELENGTHS_NM) - 600) / 80.0) ** 2)
    v = green_cover(doy, p, shift_sos, shift_eos, vmax_delta)
    after = 1.0 / (1.0 + np.exp(-(doy - p.eos - shift_eos) / p.r2))  # residue lies after the season
    residue = p.residue * after if p.canopy != "forest" else np.ones_like(doy)  # leaf litter all year
    background = (1 - residue) * spectra["soil"] * soil_brightness + residue * spectra["dry"]
    return v * spectra[p.canopy] + (1 - v) * background


def _smooth_field(rng: np.random.Generator, size: int, cells: int = 6) -> np.ndarray:
    """A smooth random field in [0, 1) of (size, size): a coarse grid, bilinearly upsampled."""
    coarse = rng.random((cells + 1, cells + 1))
    x = np.linspace(0, cells, size, endpoint=False)
    i, f = x.astype(int), x - x.astype(int)
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]  # (size, cells+1)
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _parcels(rng: np.random.Generator, size: int, fields: int) -> np.ndarray:
    """A (size, size) map of Voronoi parcel ids 0..fields-1."""
    seeds = rng.random((fields, 2)) * size
    yy, xx = np.mgrid[0:size, 0:size]
    distance = (yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2
    return distance.argmin(axis=-1)


def _dates(rng: np.random.Generator, min_dates: int, max_dates: int) -> list[dt.date]:
    """A sorted subset of a 5-day revisit of one year (Sentinel-2A+B)."""
    offset = int(rng.integers(0, 5))
    revisit = [dt.date(YEAR, 1, 1) + dt.timedelta(days=d) for d in range(offset, 365, 5)]
    count = int(rng.integers(min_dates, max_dates + 1))
    return sorted(revisit[i] for i in rng.choice(len(revisit), size=count, replace=False))


def make_location(seed: int, size: int = 64, fields: int = 12, min_dates: int = 12, max_dates: int = 20):
    """One location: reflectance float (T, H, W, 13), ISO dates, QA uint8 (T, H, W), labels uint8 (H, W)."""
    rng = np.random.default_rng(seed)
    dates = _dates(rng, min_dates, max_dates)
    doy = np.array([d.timetuple().tm_yday for d in dates], dtype=np.float64)
    parcels = _parcels(rng, size, fields)
    names = list(CLASSES)
    field_class = rng.integers(0, len(names), size=fields)
    labels = (field_class[parcels] + 1).astype(np.uint8)
    t, bands = len(dates), len(BAND_NAMES)
    surface = np.empty((t, size, size, bands), dtype=np.float64)
    for k in range(fields):
        where = parcels == k
        curve = class_reflectance(names[field_class[k]], doy, soil_brightness=rng.uniform(0.8, 1.2),
                                  shift_sos=rng.normal(0, 7), shift_eos=rng.normal(0, 7),
                                  vmax_delta=rng.uniform(-0.05, 0.05))  # (T, 13)
        surface[:, where] = curve[:, None, :]
    surface *= 1 + 0.03 * rng.standard_normal(surface.shape)
    surface += 0.005 * rng.standard_normal(surface.shape)
    water = labels == names.index("water") + 1
    qa = np.where(water, QA_CLEAR_WATER, QA_CLEAR_LAND)[None].repeat(t, axis=0).astype(np.uint8)
    observed = surface.copy()
    spectra = {k: np.asarray(v) for k, v in SPECTRA.items()}
    for i in range(t):
        kind = rng.random()
        cover = 0.0 if kind < 0.5 else rng.uniform(0.05, 0.5) if kind < 0.8 else rng.uniform(0.6, 1.0)
        if dates[i].month in (12, 1, 2) and rng.random() < 0.4:
            snow = (_smooth_field(rng, size) < 0.6) & ~water
            observed[i, snow] = spectra["snow"] * (1 + 0.02 * rng.standard_normal((int(snow.sum()), bands)))
            qa[i, snow] = QA_SNOW
        if cover > 0:
            field = _smooth_field(rng, size)
            cloud = field >= np.quantile(field, 1 - cover)
            shadow = np.roll(cloud, (5, 7), axis=(0, 1)) & ~cloud
            observed[i, shadow] *= 0.35
            qa[i, shadow] = QA_SHADOW
            thickness = rng.uniform(0.6, 1.0, size=(int(cloud.sum()), 1))
            observed[i, cloud] = thickness * spectra["cloud"] + (1 - thickness) * observed[i, cloud]
            qa[i, cloud] = QA_CLOUD
        if rng.random() < 0.1:  # the edge of a swath: no data
            yy, xx = np.mgrid[0:size, 0:size]
            fill = yy + xx > rng.uniform(1.2, 1.8) * size
            observed[i, fill] = 0.0
            qa[i, fill] = QA_FILL
    return observed, [d.isoformat() for d in dates], qa, labels


def series_file_image(reflectance: np.ndarray, dates: list[str], qa: np.ndarray, labels: np.ndarray,
                      attrs: dict) -> bytes:
    """One location as HDF5 bytes (no timestamps: the same arrays always give the same bytes)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", track_order=True) as f:
        data = f.create_dataset("series", data=np.clip(np.round(reflectance * 10000), 0, 10000).astype(np.uint16),
                                track_times=False)
        data.attrs["layout"] = "THWC"
        data.attrs["band_names"] = BAND_NAMES
        data.attrs["units"] = "surface reflectance x 10000 (scale 1e-4); 0 = no data"
        f.create_dataset("dates", data=np.array(dates, dtype="S10"), track_times=False)
        f.create_dataset("qa", data=qa, track_times=False).attrs["codes"] = (
            "CFmask: 0 clear land, 1 clear water, 2 cloud shadow, 3 snow, 4 cloud, 255 fill")
        f.create_dataset("labels", data=labels, track_times=False).attrs["class_names"] = CLASS_NAMES
        f.create_dataset("wavelengths", data=np.asarray(WAVELENGTHS_NM, dtype=np.float64), track_times=False)
        for key, value in attrs.items():
            f.attrs[key] = value
    return buffer.getvalue()


README = """# sits_demo: SYNTHETIC Sentinel-2-like time series

Every value in these files was generated by `spectral_training.cubes.demo_series`
(`kedro run --pipeline demo_data`); nothing here was observed by a satellite. Each file is one
64 x 64 px location of fields of 8 classes ({classes}) on 12-20 dates of {year},
13 Sentinel-2 bands (reflectance x 10000), a CFmask-style QA band (clouds, shadows, snow, fill)
and a per-pixel label map. Classes differ mainly by the timing of their green-up and harvest
(double-logistic phenology, Beck et al. 2006), so a single date is not enough to tell them apart.
See the module docstring for the model and the sources of the spectra.
"""


def sits_demo_files(locations: int = 16, size: int = 64, fields: int = 12, min_dates: int = 12, max_dates: int = 20,
                    seed: int = 2021) -> dict[str, bytes]:
    """The demo as {file name: bytes}: ``loc_XX.h5`` per location, and a README."""
    files = {}
    for k in range(locations):
        reflectance, dates, qa, labels = make_location(seed + k, size, fields, min_dates, max_dates)
        files[f"loc_{k:02d}.h5"] = series_file_image(reflectance, dates, qa, labels, {
            "title": "sits_demo: SYNTHETIC Sentinel-2-like series (not observed data)",
            "generator": "spectral_training.cubes.demo_series", "seed": seed + k,
        })
    files["README.md"] = README.format(classes=", ".join(CLASSES), year=YEAR).encode()
    return files
