module skyhook/examples/shop

go 1.21
