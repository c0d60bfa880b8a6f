from devline.cli.main import main

main()
