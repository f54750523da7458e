from diffrestore.cli.main import main

raise SystemExit(main())
