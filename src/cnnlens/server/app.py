"""The explorer's FastAPI app: one static page and a JSON / PNG API over one folder.

Endpoints (all GET unless said):

- ``/`` the page; ``/static/app.js``, ``/static/style.css`` its script and style;
- ``/api/info`` what is served: kind, classes, methods (stored, and on the fly), metrics,
  report sections, upload limit;
- ``/api/images?offset=&limit=&wrong=`` a page of the browsable images, one row each
  (target, prediction, probability, labels), and how many there are;
- ``/api/images/{i}.png`` the image; ``/api/maps/{method}/{i}.png`` its map as an RGBA
  overlay, ``/api/maps/{method}/{i}.json`` the values as arrays;
- ``/api/curves/{i}`` deletion / insertion curves (x, y per metric and method);
- ``/api/metrics`` the mean (with a 95 % interval) per method and metric over the finished
  images; ``/api/metrics/{i}`` the values of one image;
- ``/report`` the run's ``report.html`` (model-level sections), scripts off;
- ``/files/{path}`` a plain file of the served folder (:mod:`.paths` refuses the rest);
- ``/api/concepts/layers`` the spatial layers the concept view offers and the default;
  ``/api/concepts/{i}?layer=&top=`` image ``i``'s top concepts at the layer (CRP): each
  channel's share of the relevance, its conditional heatmap and reference crops as PNG
  data URLs (:mod:`.concepts`); 400 with the reason on a model LRP has no rule for;
- POST ``/api/explain`` (multipart: ``image``, ``methods``) an uploaded PNG / JPEG,
  explained on the fly; maps come back as PNG data URLs (and arrays with ``arrays=true``).
"""

# no `from __future__ import annotations`: FastAPI reads the endpoints' annotations,
# which name classes imported inside create_app
import base64
import math
import time
from pathlib import Path

import numpy as np

from ..errors import CnnlensError, InputError, StoreError
from . import extra
from .headers import SafeHeaders
from .paths import Refused, media_type, resolve_inside
from .render import map_png, png
from .sources import needs_setup, on_the_fly_methods, open_source, report_sections
from .upload import BodyLimit, decode_image, to_input

STATIC = Path(__file__).parent / "static"
STATIC_FILES = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
LOOPBACK = ("127.0.0.1", "localhost", "::1")
MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the uploaded file
MAX_METHODS = 8
PAGE, MAX_PAGE = 200, 1000  # image rows per answer: a store may hold 50,000


def _data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _finite(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def create_app(
    path: str | Path,
    *,
    max_upload_mb: float = 10.0,
    allowed_hosts: tuple[str, ...] | None = LOOPBACK,
    images: int | None = None,
    model=None,
    data: str | None = None,
):
    """The explorer for the run folder or store at ``path``, or for ``model`` (a
    :class:`~cnnlens.loading.spec.ModelSpec`) on ``data`` (:func:`.sources.open_source`).

    ``allowed_hosts`` are the names the ``Host`` header may carry (None: any; the default
    keeps a web page elsewhere from reaching the server through DNS rebinding);
    ``images`` caps how many test images a run folder shows.
    """
    extra.require()
    from fastapi import FastAPI, File, Form, HTTPException, UploadFile
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response

    if not (math.isfinite(max_upload_mb) and max_upload_mb > 0):
        raise InputError(f"--max-upload-mb must be positive, got {max_upload_mb}")
    max_bytes = int(max_upload_mb * 1e6)
    source = open_source(
        path, model=model, data=data, **({} if images is None else {"images": images})
    )
    sections = report_sections(source.report)
    app = FastAPI(title="cnnlens explorer", docs_url=None, redoc_url=None, openapi_url=None)

    too_large = f"the upload is larger than the limit of {max_upload_mb:g} MB"
    app.add_middleware(SafeHeaders, allowed_hosts=allowed_hosts)
    app.add_middleware(BodyLimit, max_bytes=max_bytes + MULTIPART_SLACK, message=too_large)

    def png_response(data: bytes) -> Response:
        return Response(data, media_type="image/png")

    def lookup(fn, *args):
        try:
            return fn(*args)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0]) if exc.args else "not found") from None
        except StoreError:
            raise  # the server's files are broken, not the request: see store_broken
        except CnnlensError as exc:
            raise HTTPException(400, str(exc)) from None

    @app.exception_handler(CnnlensError)
    def store_broken(request, exc: CnnlensError):
        """A damaged store file (or another cnnlens error outside ``lookup``): a JSON
        answer naming the file and what is wrong, not a traceback in the log."""
        status = 500 if isinstance(exc, StoreError) else 400
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC_FILES:
            raise HTTPException(404, f"no static file {name!r}")
        return FileResponse(STATIC / name, media_type=STATIC_FILES[name])

    @app.get("/api/info")
    def info():
        holder = source.holder
        return {
            "kind": source.kind,
            "title": source.title,
            "classes": source.classes,
            "methods": source.methods,
            "metrics": source.metrics,
            "images": len(source.indices),
            "upload": {
                "available": holder.available,
                "problem": holder.problem,
                "methods": on_the_fly_methods() if holder.available else [],
                "unavailable": needs_setup(),
                "max_mb": max_upload_mb,
            },
            "report": {"available": source.report is not None, "sections": sections},
        }

    @app.get("/api/images")
    def images_list(offset: int = 0, limit: int = PAGE, wrong: bool = False):
        rows = lookup(source.predictions)
        if wrong:
            rows = [r for r in rows if r["prediction"] != r["target"]]
        offset, limit = max(0, offset), min(max(1, limit), MAX_PAGE)
        return {"total": len(rows), "offset": offset, "rows": rows[offset : offset + limit]}

    @app.get("/api/images/{index:int}.png")
    def image_png(index: int):
        return png_response(png(lookup(source.image, index)))

    @app.get("/api/maps/{method}/{index:int}.png")
    def map_picture(method: str, index: int):
        return png_response(map_png(lookup(source.map, method, index)))

    @app.get("/api/maps/{method}/{index:int}.json")
    def map_values(method: str, index: int):
        values = lookup(source.map, method, index)
        return {
            "method": method,
            "image": index,
            "shape": list(values.shape),
            "values": np.nan_to_num(values).astype(float).tolist(),
        }

    @app.get("/api/curves/{index:int}")
    def curves(index: int):
        return lookup(source.curves, index)

    @app.get("/api/metrics")
    def metrics():
        table = lookup(source.metric_table).dropna(subset=["value"])
        summary = []
        for (method, metric), values in table.groupby(["method", "metric"], sort=False)["value"]:
            n = len(values)
            sd = float(values.std(ddof=1)) if n > 1 else float("nan")
            summary.append(
                {
                    "method": str(method),
                    "metric": str(metric),
                    "images": n,
                    "mean": _finite(float(values.mean())),
                    "ci95": _finite(1.96 * sd / math.sqrt(n)) if n > 1 else None,
                }
            )
        return {"summary": summary}

    @app.get("/api/metrics/{index:int}")
    def image_metrics(index: int):
        lookup(source.image, index)  # 404 for an image that is not there (yet)
        table = lookup(source.metric_table)
        rows = table[table["image"] == index]
        return {
            "rows": [
                {"method": str(r.method), "metric": str(r.metric), "value": _finite(float(r.value))}
                for r in rows.itertuples(index=False)
            ]
        }

    def concept_view():
        holder = source.holder
        if not holder.available:
            raise HTTPException(409, f"concepts need the model: {holder.problem}")
        return source.concepts

    @app.get("/api/concepts/layers")
    def concept_layers():
        return lookup(lambda: concept_view().layers())

    @app.get("/api/concepts/{index:int}")
    def concepts(index: int, layer: str = "", top: int = 4):
        lookup(source.image, index)  # 404 for an image that is not there (yet)
        result = lookup(concept_view().explain, index, layer or None, top)
        out = {k: v for k, v in result.items() if k not in ("lrp", "concepts")}
        out["lrp"] = _data_url(result["lrp"])
        out["concepts"] = [
            {**{k: v for k, v in c.items() if k not in ("map", "crops")},
             "map": _data_url(c["map"]),
             "crops": [{**{k: v for k, v in crop.items() if k != "png"},
                        "png": _data_url(crop["png"])} for crop in c["crops"]]}
            for c in result["concepts"]
        ]  # fmt: skip
        return out

    @app.get("/report")
    def report():
        if source.report is None:
            raise HTTPException(404, "this run has no report.html")
        response = FileResponse(source.report, media_type="text/html; charset=utf-8")
        response.headers["Content-Security-Policy"] = "sandbox; default-src 'none'; " + (
            "img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
        )
        return response

    @app.get("/files/{requested:path}")
    def files(requested: str):
        try:
            target = resolve_inside(source.root, requested)
        except Refused as exc:
            raise HTTPException(403, str(exc)) from None
        except FileNotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        response = FileResponse(target, media_type=media_type(target))
        if target.suffix.lower() == ".html":
            response.headers["Content-Security-Policy"] = (
                "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"
            )
        return response

    @app.post("/api/explain")
    def explain_upload(
        image: UploadFile = File(...),  # noqa: B008
        methods: str = Form("grad-cam"),
        target: int = Form(-1),
        arrays: bool = Form(False),
    ):
        holder = source.holder
        if not holder.available:
            raise HTTPException(409, f"uploads cannot be explained: {holder.problem}")
        data = image.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, too_large)
        names = list(dict.fromkeys(m.strip() for m in methods.split(",") if m.strip()))
        allowed = on_the_fly_methods()
        unknown = [m for m in names if m not in allowed]
        if unknown or not names or len(names) > MAX_METHODS:
            raise HTTPException(
                400,
                f"methods must be 1 to {MAX_METHODS} of {', '.join(allowed)}; got {methods!r}",
            )
        try:
            channels, height, width = holder.input_shape()
            pixels = decode_image(data, channels=channels, size=(height, width))
            x = to_input(pixels, holder.meta.get("mean"), holder.meta.get("std"))
            probs = holder.predict(x)[0]
        except CnnlensError as exc:
            raise HTTPException(400, str(exc)) from None
        classes = source.classes or [str(k) for k in range(len(probs))]
        if target >= len(probs):
            raise HTTPException(400, f"target {target} is not a class (0 .. {len(probs) - 1})")
        goal = int(probs.argmax()) if target < 0 else target
        top = probs.argsort(descending=True)[:5]
        out = {
            "width": width,
            "height": height,
            "image": _data_url(png(pixels)),
            "target": goal,
            "target_label": classes[goal],
            "top": [
                {"class": int(k), "label": classes[int(k)], "probability": float(probs[k])}
                for k in top
            ],
            "maps": {},
            "errors": {},
        }
        for name in names:
            start = time.perf_counter()
            try:
                values = holder.explain(x, name, goal)
            except CnnlensError as exc:
                out["errors"][name] = str(exc)
                continue
            entry = {
                "png": _data_url(map_png(values)),
                "min": _finite(float(values.min())),
                "max": _finite(float(values.max())),
                "seconds": time.perf_counter() - start,
            }
            if arrays:
                entry["values"] = np.nan_to_num(values).astype(float).tolist()
            out["maps"][name] = entry
        return out

    app.state.source = source
    return app
