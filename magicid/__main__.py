from magicid.cli import main


raise SystemExit(main())
