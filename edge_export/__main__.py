from edge_export.cli import main

main()
