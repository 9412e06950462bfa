from edge_export.cli.main import main

main()
