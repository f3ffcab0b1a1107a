"""Self-check functions for the course notebooks' exercises, one module per notebook.

Each check returns a :class:`Feedback`, which prints as a clear right/wrong message with the
reason, shows nicely in Jupyter, and is truthy when the answer is right.
"""

from gradhealth.course.exercises._feedback import Feedback

__all__ = ["Feedback"]
