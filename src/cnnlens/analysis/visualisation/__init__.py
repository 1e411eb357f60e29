"""Images that show what a unit or a layer encodes (survey paper 001, section 3.1):
activation maximisation (Erhan et al. 2009; Olah et al. 2017) with its facets
(:func:`maximise`, :func:`facets`), feature inversion (Mahendran & Vedaldi 2015;
:func:`invert`), and the image parameterisations both optimise."""

from .image_params import colour_decorrelation
from .inversion import Facets, Inversion, facets, invert
from .maximise import Maximisation, Objective, maximise, maximise_all

__all__ = [
    "Facets",
    "Inversion",
    "Maximisation",
    "Objective",
    "colour_decorrelation",
    "facets",
    "invert",
    "maximise",
    "maximise_all",
]
