"""The course: notebook runner, experiments, comparisons, course plots and exercises.

Built on the library; nothing in the library imports it. Notebooks record the numbers their
prose claims with :func:`summary`; :func:`run_notebook` executes a notebook and reads them back.
"""

from gradhealth.course.runner import KERNEL_NAME, NOTEBOOKS, run_notebook, summary

__all__ = ["KERNEL_NAME", "NOTEBOOKS", "run_notebook", "summary"]
