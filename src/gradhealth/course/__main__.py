"""``python -m gradhealth.course``: the course's build steps (see :mod:`gradhealth.course.build`)."""

from gradhealth.course.build import main

raise SystemExit(main())
