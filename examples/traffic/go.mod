module skyhook/examples/traffic

go 1.21
