"""``python -m gradhealth.course``: execute the course notebooks into a folder."""

from gradhealth.course.runner import main

raise SystemExit(main())
