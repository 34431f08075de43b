"""``python -m espnet_ros.bench``: the same as ``espnet-ros bench`` (and the bench's camera process)."""

from espnet_ros.bench.command import main

raise SystemExit(main())
