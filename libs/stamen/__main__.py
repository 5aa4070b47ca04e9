from stamen.cli import main

main()
